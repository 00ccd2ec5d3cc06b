"""The curvature twin: a clone of a user's model built for exact curvature.

The twin differs from the original in three ways, all of which leave the
loss *function* unchanged while making its derivatives trustworthy:

- every layer computes in the requested dtype (float32 or float64);
- BatchNormalization, LayerNormalization and GroupNormalization are replaced
  by subclasses with exact second derivatives (``exact_norm.py``);
- dropout and noise layers become identities, since a Hessian of a random
  function is not what anyone wants to measure.

The twin is never trained: it is evaluated with ``stateless_call`` on the
original model's weight values, so the two cannot drift apart.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import keras

from eoskeras.curvature.exact_norm import exact_replacement

_RANDOM_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)


def _clone_layer(layer: keras.layers.Layer, dtype: str) -> keras.layers.Layer:
    if isinstance(layer, _RANDOM_LAYERS):
        return keras.layers.Identity(name=layer.name, dtype=dtype)
    config = dict(layer.get_config(), dtype=dtype)
    return (exact_replacement(layer) or type(layer)).from_config(config)


@dataclass(frozen=True)
class Twin:
    """A twin model and how its variables map onto the original's.

    ``trainable_order[i]`` is the index, in ``original.trainable_variables``,
    of the twin's i-th trainable variable; likewise for non-trainables.
    """

    model: keras.Model
    trainable_order: tuple[int, ...]
    non_trainable_order: tuple[int, ...]


def _match(twin_vars, original_vars, what: str) -> tuple[int, ...]:
    paths = [v.path for v in original_vars]
    by_path = {p: i for i, p in enumerate(paths)}
    unique = len(by_path) == len(paths)
    order = []
    for i, v in enumerate(twin_vars):
        j = by_path.get(v.path) if unique else i
        if j is None or j >= len(original_vars) or tuple(original_vars[j].shape) != tuple(v.shape):
            raise ValueError(
                f"cannot match the curvature twin's {what} variable {v.path!r} "
                f"{tuple(v.shape)} to a variable of the original model"
            )
        order.append(j)
    return tuple(order)


def build_twin(model: keras.Model, dtype: str) -> Twin:
    """Clone ``model`` for exact curvature in ``dtype``.

    Functional and Sequential models (and nestings of them, such as the
    ``keras.applications`` networks) are supported; subclassed models cannot be
    cloned layer by layer and raise ``TypeError``.
    """
    if not model.built:
        raise ValueError("build the model (call it once or give it an input shape) before measuring curvature")
    if not isinstance(model, (keras.Sequential, keras.Model)) or not (
        isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"
    ):
        raise TypeError(
            f"eoskeras computes curvature of Functional or Sequential Keras models; got a subclassed "
            f"{type(model).__name__}. Build it with keras.Input(...) / keras.Sequential([...]) instead."
        )
    # Keras draws default initializer seeds from Python's global RNG while
    # cloning; measuring curvature must not shift the user's random streams.
    python_rng_state = random.getstate()
    try:
        clone = keras.models.clone_model(
            model, clone_function=lambda layer: _clone_layer(layer, dtype), recursive=True
        )
    finally:
        random.setstate(python_rng_state)
    return Twin(
        model=clone,
        trainable_order=_match(clone.trainable_variables, model.trainable_variables, "trainable"),
        non_trainable_order=_match(clone.non_trainable_variables, model.non_trainable_variables, "non-trainable"),
    )
