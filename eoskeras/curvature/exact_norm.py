"""Normalisation layers with exact second derivatives.

TensorFlow's ``tf.nn.moments`` (used by Keras 3's BatchNormalization,
LayerNormalization and GroupNormalization) computes the variance around
``stop_gradient(mean)``. The first derivative is unaffected (the dropped term
is a sum of centred activations, which is zero), but the second derivative
loses a term, so Hessian-vector products through these layers are wrong by
~1e-2 relative. The functions below compute the moments without
``stop_gradient``. The curvature twin (``twin.py``) swaps the subclasses in
for the stock layers of a cloned model, or, for a model that cannot be cloned
(subclassed), sets ``exact_instance_patches`` on the layer instances only
while the loss is traced; user models and training are untouched.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
from keras import ops


def exact_moments(x, axes: Sequence[int], keepdims: bool = False):
    """Mean and (biased) variance over ``axes``, differentiable to any order."""
    axes = tuple(axes)
    mean = ops.mean(x, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(x - mean), axis=axes, keepdims=True)
    if not keepdims:
        mean = ops.squeeze(mean, axis=axes)
        variance = ops.squeeze(variance, axis=axes)
    return mean, variance


def _compute_dtype(x):
    # The stock layers upcast half precision to float32 for their statistics.
    return keras.backend.result_type(x.dtype, "float32")


def _exact_bn_moments(layer, stock_moments):
    """A BatchNormalization's ``_moments`` with exact second derivatives."""
    def moments(inputs, mask):
        if mask is not None:
            return stock_moments(inputs, mask)  # computed explicitly: already exact
        return exact_moments(inputs, layer._reduction_axes)
    return moments


def exact_layer_norm(layer: keras.layers.LayerNormalization, inputs):
    """``layer``'s output with exact second derivatives (not for rms_scaling,
    which Keras already computes with a plain, exact variance)."""
    x = ops.cast(inputs, _compute_dtype(inputs))
    ndim = len(x.shape)
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    axes = sorted(a % ndim for a in axes)
    mean, variance = exact_moments(x, axes, keepdims=True)
    outputs = (x - mean) * ops.rsqrt(variance + layer.epsilon)
    param_shape = [x.shape[d] if d in axes else 1 for d in range(ndim)]
    if layer.gamma is not None:
        outputs = outputs * ops.reshape(ops.cast(layer.gamma, x.dtype), param_shape)
    if layer.beta is not None:
        outputs = outputs + ops.reshape(ops.cast(layer.beta, x.dtype), param_shape)
    return ops.cast(outputs, layer.compute_dtype)


def exact_group_norm(layer: keras.layers.GroupNormalization, inputs):
    """``layer``'s output with exact second derivatives."""
    x = ops.cast(inputs, _compute_dtype(inputs))
    ndim = len(x.shape)
    axis = layer.axis % ndim
    channels = x.shape[axis]
    # Split the channel axis into (groups, channels_per_group) and
    # normalise over every axis but the batch and the group axis.
    grouped_shape = [-1] + [
        s if s is not None else ops.shape(x)[i]
        for i, s in enumerate(x.shape) if i > 0
    ]
    grouped_shape[axis:axis + 1] = [layer.groups, channels // layer.groups]
    grouped = ops.reshape(x, grouped_shape)
    reduce_axes = [d for d in range(1, ndim + 1) if d != axis]
    mean, variance = exact_moments(grouped, reduce_axes, keepdims=True)
    normalized = ops.reshape((grouped - mean) * ops.rsqrt(variance + layer.epsilon), ops.shape(x))
    param_shape = [channels if d == axis else 1 for d in range(ndim)]
    if layer.scale:
        normalized = normalized * ops.reshape(ops.cast(layer.gamma, x.dtype), param_shape)
    if layer.center:
        normalized = normalized + ops.reshape(ops.cast(layer.beta, x.dtype), param_shape)
    return ops.cast(normalized, layer.compute_dtype)


class ExactBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose batch statistics have exact second derivatives."""

    def _moments(self, inputs, mask):
        return _exact_bn_moments(self, super()._moments)(inputs, mask)


class ExactLayerNormalization(keras.layers.LayerNormalization):
    """LayerNormalization with exact second derivatives."""

    def call(self, inputs):
        return super().call(inputs) if self.rms_scaling else exact_layer_norm(self, inputs)


class ExactGroupNormalization(keras.layers.GroupNormalization):
    """GroupNormalization with exact second derivatives."""

    def call(self, inputs):
        return exact_group_norm(self, inputs)


# Stock layer -> exact replacement (exact type match: user subclasses may
# override call(), and swapping them would change the function).
EXACT_REPLACEMENTS: dict[type, type] = {
    keras.layers.BatchNormalization: ExactBatchNormalization,
    keras.layers.LayerNormalization: ExactLayerNormalization,
    keras.layers.GroupNormalization: ExactGroupNormalization,
}


def exact_replacement(layer: keras.layers.Layer) -> type | None:
    """The exact class to clone a normalisation ``layer`` as, ``None`` for any
    other layer; ``TypeError`` for one whose curvature would silently be wrong.

    Refused: ``synchronized=True`` BatchNormalization (its statistics span the
    replicas, which the oracle deals different micro-batches to) and
    subclasses of the stock layers (they may override how the statistics are
    computed, so neither the stock nor the exact class is known to be theirs).
    """
    kind = type(layer)
    if kind in EXACT_REPLACEMENTS:
        if getattr(layer, "synchronized", False):
            raise TypeError(f"layer {layer.name!r}: BatchNormalization(synchronized=True) has no exact curvature "
                            "twin (its statistics span the replicas); use synchronized=False, which the curvature "
                            "oracle and FullBatchModel compute per micro-batch")
        return EXACT_REPLACEMENTS[kind]
    for stock in EXACT_REPLACEMENTS:
        if isinstance(layer, stock):
            raise TypeError(f"layer {layer.name!r} is a {kind.__name__}, a subclass of keras.layers.{stock.__name__}: "
                            "Keras computes its statistics with inexact second derivatives and eoskeras cannot swap "
                            f"a subclass for its exact twin; use keras.layers.{stock.__name__} itself")
    return None


def exact_instance_patches(layer: keras.layers.Layer) -> dict[str, Callable]:
    """Instance attributes that make one stock normalisation layer exact
    without cloning it (for models that cannot be cloned layer by layer):
    set them for the duration of a trace, then remove them."""
    kind = exact_replacement(layer)  # refuses what cannot be made exact
    if kind is ExactBatchNormalization:
        return {"_moments": _exact_bn_moments(layer, layer._moments)}
    if kind is ExactLayerNormalization and not layer.rms_scaling:
        return {"call": lambda inputs: exact_layer_norm(layer, inputs)}
    if kind is ExactGroupNormalization:
        return {"call": lambda inputs: exact_group_norm(layer, inputs)}
    return {}
