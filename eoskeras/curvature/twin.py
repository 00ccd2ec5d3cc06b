"""The curvature twin: a clone of a user's model built for exact curvature.

The twin differs from the original in three ways, all of which leave the
loss *function* unchanged while making its derivatives trustworthy:

- every layer computes in the requested dtype (float32 or float64);
- BatchNormalization, LayerNormalization and GroupNormalization are replaced
  by subclasses with exact second derivatives (``exact_norm.py``);
- dropout and noise layers become identities, since a Hessian of a random
  function is not what anyone wants to measure.

The twin is never trained: it is evaluated with ``stateless_call`` on the
original model's weight values, so the two cannot drift apart. A model with
nothing to change (no such layer, already in the dtype) is its own twin, as
``stateless_call`` leaves it untouched: cloning would only cost time (15 ms
for fc-tanh, 142 ms for vgg11, which also allocates a second set of weights).
A subclassed model cannot be cloned layer by layer: it is its own twin, made
exact by patching its normalisation and dropout layer instances only while
the loss is traced (``Twin.exact``).
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Callable, Iterator

import keras

from eoskeras.curvature.exact_norm import EXACT_REPLACEMENTS, exact_instance_patches, exact_replacement

_RANDOM_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)


def _check_exactable(layers) -> None:
    """Refuse what cannot be made exact (``exact_replacement`` says why):
    subclasses of normalisation layers, synchronized BatchNormalization."""
    for layer in layers:
        if type(layer) not in EXACT_REPLACEMENTS.values():
            exact_replacement(layer)


def _clone_layer(layer: keras.layers.Layer, dtype: str, pairs: list) -> keras.layers.Layer:
    if isinstance(layer, _RANDOM_LAYERS):
        clone = keras.layers.Identity(name=layer.name, dtype=dtype)
    else:
        config = dict(layer.get_config(), dtype=dtype)
        clone = (exact_replacement(layer) or type(layer)).from_config(config)
    pairs.append((layer, clone))
    return clone


@dataclass(frozen=True)
class Twin:
    """A twin model and how its variables map onto the original's.

    ``trainable_order[i]`` is the index, in ``original.trainable_variables``,
    of the twin's i-th trainable variable; likewise for non-trainables.
    Evaluate the twin inside ``exact()``: for a subclassed model the twin is
    the model itself, made exact only inside that context.
    """

    model: keras.Model
    trainable_order: tuple[int, ...]
    non_trainable_order: tuple[int, ...]
    patches: tuple[tuple[keras.layers.Layer, dict[str, Callable]], ...] = ()

    @contextlib.contextmanager
    def exact(self) -> Iterator[None]:
        """Set the instance patches for the duration of a trace, then remove them."""
        for layer, attributes in self.patches:
            vars(layer).update(attributes)  # the instance dict: no Keras attribute tracking
        try:
            yield
        finally:
            for layer, attributes in self.patches:
                for name in attributes:
                    vars(layer).pop(name, None)


def _match(twin_vars, original_vars, source: dict[int, keras.Variable], what: str) -> tuple[int, ...]:
    """Index in ``original_vars`` of each twin variable, through ``source``
    (twin variable id -> the original variable it was cloned from)."""
    index = {id(v): i for i, v in enumerate(original_vars)}
    order = []
    for v in twin_vars:
        j = index.get(id(source.get(id(v))))
        if j is None or tuple(original_vars[j].shape) != tuple(v.shape):
            raise ValueError(
                f"cannot match the curvature twin's {what} variable {v.path!r} "
                f"{tuple(v.shape)} to a variable of the original model"
            )
        order.append(j)
    return tuple(order)


def _is_cloneable(model: keras.Model) -> bool:
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"


def _float_dtypes(model: keras.Model, layers: list[keras.layers.Layer]) -> set[str]:
    """The floating dtypes ``model``'s variables are stored and its layers compute in."""
    floats = {v.dtype for v in model.variables if "float" in str(v.dtype)}
    return floats | {layer.compute_dtype for layer in layers if "float" in str(layer.compute_dtype)}


def _unchanged_by_cloning(model: keras.Model, dtype: str) -> bool:
    """Cloning would change nothing: no layer to replace or silence, and
    every layer already stores and computes in ``dtype``."""
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    return (_float_dtypes(model, layers) <= {dtype}
            and not any(isinstance(layer, _RANDOM_LAYERS) or exact_replacement(layer) for layer in layers))


def _instance_twin(model: keras.Model, dtype: str) -> Twin:
    """A model measured as itself: exact through instance patches, if it has any."""
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    _check_exactable(layers)
    floats, dtypes = {v.dtype for v in model.variables if "float" in str(v.dtype)}, _float_dtypes(model, layers)
    if dtypes != {dtype}:  # only a subclassed model gets here in another dtype: a cloneable one is cloned
        raise ValueError(
            f"dtype: got {dtype!r}, but the subclassed {type(model).__name__} computes in "
            f"{', '.join(sorted(dtypes))}: a subclassed model is measured as built (it cannot be cloned "
            f"into another dtype, and Keras casts weight values to each variable's dtype). Pass dtype="
            f"{next(iter(floats)) if len(floats) == 1 else 'its dtype'}, or build the model under "
            f"keras.config.set_dtype_policy({dtype!r}).")
    patches = [(layer, exact_instance_patches(layer)) for layer in layers]
    patches += [(layer, {"call": lambda inputs, *args, **kwargs: inputs})
                for layer in layers if isinstance(layer, _RANDOM_LAYERS)]
    return Twin(model=model, trainable_order=tuple(range(len(model.trainable_variables))),
                non_trainable_order=tuple(range(len(model.non_trainable_variables))),
                patches=tuple((layer, p) for layer, p in patches if p))


def build_twin(model: keras.Model, dtype: str) -> Twin:
    """Clone ``model`` for exact curvature in ``dtype``.

    Functional and Sequential models (and nestings of them, such as the
    ``keras.applications`` networks), built in memory or loaded from a
    ``.keras`` file, are cloned where a layer must change, and are their own
    twin where nothing would. Subclassed models are measured as themselves,
    in their own dtype, exact through their stock normalisation layers by
    patching those layer instances during the trace. Subclasses of the
    normalisation layers raise ``TypeError`` (they cannot be made exact).
    """
    if not model.built:
        raise ValueError("build the model (call it once or give it an input shape) before measuring curvature")
    if not _is_cloneable(model) or _unchanged_by_cloning(model, dtype):
        return _instance_twin(model, dtype)
    _check_exactable(model._flatten_layers(include_self=False, recursive=True))
    # Keras draws default initializer seeds from Python's global RNG while
    # cloning; measuring curvature must not shift the user's random streams.
    python_rng_state = random.getstate()
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []
    try:
        clone = keras.models.clone_model(
            model, clone_function=lambda layer: _clone_layer(layer, dtype, pairs), recursive=True
        )
    finally:
        random.setstate(python_rng_state)
    # Variables are matched through the layer each was cloned from (a loaded
    # model's variable paths need not match its clone's).
    source = {id(c): o for original, twin in pairs for o, c in zip(original.weights, twin.weights)}
    return Twin(
        model=clone,
        trainable_order=_match(clone.trainable_variables, model.trainable_variables, source, "trainable"),
        non_trainable_order=_match(clone.non_trainable_variables, model.non_trainable_variables, source,
                                   "non-trainable"),
    )
