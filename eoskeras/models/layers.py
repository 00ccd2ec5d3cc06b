"""Seeded layer construction shared by every builder.

A ``LayerFactory`` holds a model's seed, initialisation scheme, activation and
normalisation, and applies stock Keras layers to functional tensors. Each
layer gets fresh initialisers with their own seed, derived from the model seed
and the layer's position, so the same seed gives the same weights without
touching global RNG state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

EPSILON = 1e-5  # PyTorch's and Flax's normalisation epsilon (Keras's default is 1e-3)
BN_MOMENTUM = 0.9  # Keras convention; PyTorch's momentum=0.1 means the same
GROUPS = 4  # group norm groups (fewer when the channel count is not a multiple)


@dataclass(frozen=True)
class Init:
    """Kernel and bias schemes for conv and dense layers; ``conv_bias=None`` drops conv biases.

    Kernel schemes: ``lecun_normal`` (truncated normal, variance 1/fan_in, as
    Flax's default), ``torch`` (PyTorch's default U(±1/sqrt(fan_in))),
    ``he_fan_in`` / ``he_fan_out`` (untruncated normal, variance 2/fan).
    Bias schemes: ``zeros`` or ``torch`` (U(±1/sqrt(fan_in)), PyTorch's default).
    """

    conv_kernel: str
    conv_bias: str | None
    dense_kernel: str
    dense_bias: str


def _kernel(scheme: str, seed: int) -> keras.initializers.Initializer:
    if scheme == "lecun_normal":
        return keras.initializers.LecunNormal(seed=seed)
    if scheme == "torch":
        # Variance-scaling uniform has limit sqrt(3 * scale / fan_in): 1/sqrt(fan_in) at 1/3.
        return keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=seed)
    if scheme in ("he_fan_in", "he_fan_out"):
        mode = scheme.removeprefix("he_")
        return keras.initializers.VarianceScaling(2.0, mode, "untruncated_normal", seed=seed)
    raise ValueError(f"unknown kernel initialisation {scheme!r}")


def _bias(scheme: str, seed: int, fan_in: int) -> keras.initializers.Initializer:
    if scheme == "zeros":
        return keras.initializers.Zeros()
    if scheme == "torch":
        bound = 1 / math.sqrt(fan_in)
        return keras.initializers.RandomUniform(-bound, bound, seed=seed)
    raise ValueError(f"unknown bias initialisation {scheme!r}")


class LayerFactory:
    """Applies seeded stock Keras layers to functional tensors.

    Example:

    ```python
    init = Init("lecun_normal", "zeros", "lecun_normal", "zeros")
    f = LayerFactory(seed=0, init=init, activation="relu", norm="batch")
    x = keras.Input((32, 32, 3))
    y = f.norm_act(f.conv(x, 8, "conv1"), "conv1")
    ```
    """

    def __init__(self, seed: int, init: Init, activation: str, norm: str) -> None:
        self.seed = seed
        self.init = init
        self.activation = activation
        self.norm_kind = norm
        self._drawn = 0

    def _next_seed(self) -> int:
        # Independent streams per (model seed, layer position).
        self._drawn += 1
        return int(np.random.SeedSequence([self.seed, self._drawn]).generate_state(1)[0])

    def conv(self, x: keras.KerasTensor, filters: int, name: str, strides: int = 1) -> keras.KerasTensor:
        """3x3 convolution with 'same' padding."""
        fan_in = 9 * x.shape[-1]
        bias = self.init.conv_bias
        # A bias seed is drawn even without a bias, so that turning biases on
        # or off leaves every other layer's initial weights unchanged.
        return keras.layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=bias is not None,
            kernel_initializer=_kernel(self.init.conv_kernel, self._next_seed()),
            bias_initializer=_bias(bias or "zeros", self._next_seed(), fan_in),
            name=name)(x)

    def dense(self, x: keras.KerasTensor, units: int, name: str) -> keras.KerasTensor:
        return keras.layers.Dense(
            units,
            kernel_initializer=_kernel(self.init.dense_kernel, self._next_seed()),
            bias_initializer=_bias(self.init.dense_bias, self._next_seed(), x.shape[-1]),
            name=name)(x)

    def act(self, x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        return keras.layers.Activation(self.activation, name=f"{name}_{self.activation}")(x)

    def norm(self, x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        """The chosen normalisation over channels (identity for ``"none"``).

        ``layer`` on feature maps normalises each example over height, width
        and channels with per-channel scale and shift (one group); ``group``
        uses ``GROUPS`` groups of channels.
        """
        channels = x.shape[-1]
        if self.norm_kind == "none":
            return x
        if self.norm_kind == "batch":
            layer = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=EPSILON,
                                                    name=f"{name}_bn")
        elif self.norm_kind == "layer" and len(x.shape) == 2:
            layer = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"{name}_ln")
        else:
            groups = 1 if self.norm_kind == "layer" else math.gcd(channels, GROUPS)
            layer = keras.layers.GroupNormalization(groups, epsilon=EPSILON, name=f"{name}_gn")
        return layer(x)

    def norm_act(self, x: keras.KerasTensor, name: str, norm_first: bool = True) -> keras.KerasTensor:
        """Normalisation then activation, or the reverse (Cohen et al.'s BN nets)."""
        if norm_first:
            return self.act(self.norm(x, name), name)
        return self.norm(self.act(x, name), name)

