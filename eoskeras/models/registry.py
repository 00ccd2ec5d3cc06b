"""``build_model``: every model name in the catalog, with its defaults and initialisation."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import keras

from eoskeras.models.catalog import MODEL_OPTIONS, OPTION_TYPES
from eoskeras.models.convnets import VGG10, VGG11, cohen_cnn, vgg
from eoskeras.models.layers import Init, LayerFactory
from eoskeras.models.mlp import mlp
from eoskeras.models.resnets import resnet


class _Entry(NamedTuple):
    family: Callable[..., keras.KerasTensor]
    init: Init
    defaults: dict[str, Any]  # the options a recipe may change (catalog.MODEL_OPTIONS)
    fixed: dict[str, Any]  # architecture constants of this name


# Wang & Roberts: LeCun-normal kernels, zero biases (Flax's defaults). The
# advertised parameter counts fix the conv biases: VGG10 has them (32,782
# trainable parameters; 32,614 without), ResNet20 does not (68,050; 68,394 with).
PAPER = Init("lecun_normal", "zeros", "lecun_normal", "zeros")
PAPER_NO_CONV_BIAS = Init("lecun_normal", None, "lecun_normal", "zeros")
# Cohen et al. used PyTorch modules: default initialisation for the fc and
# small conv nets; their VGG draws conv kernels from N(0, 2/(9 out_channels))
# with zero biases; the common CIFAR ResNet-32 uses He-normal (fan-in) kernels,
# no conv biases, PyTorch's default bias on the last layer.
TORCH = Init("torch", "torch", "torch", "torch")
VGG_COHEN = Init("he_fan_out", "zeros", "torch", "torch")
RESNET_COHEN = Init("he_fan_in", None, "he_fan_in", "torch")


def _fc(activation: str) -> _Entry:
    return _Entry(mlp, TORCH, dict(width=200, depth=2, activation=activation, norm="none"),
                  dict(norm_first=False))


def _cnn(activation: str, norm: str) -> _Entry:
    return _Entry(cohen_cnn, TORCH, dict(width=32, depth=2, activation=activation, norm=norm), {})


def _vgg11(norm: str) -> _Entry:
    # Cohen et al.'s VGG-11 keeps its 512-512 classifier (without dropout, and
    # without BN even in the BN variant).
    return _Entry(vgg, VGG_COHEN, dict(width=64, activation="relu", norm=norm),
                  dict(blocks=VGG11, head=(8, 8), head_norm=False))


BUILDERS: dict[str, _Entry] = {
    "vgg10_base8_bn": _Entry(vgg, PAPER, dict(width=8, activation="relu", norm="batch"),
                             dict(blocks=VGG10, head=(0.5,), head_norm=True)),
    "resnet20_base8": _Entry(resnet, PAPER_NO_CONV_BIAS,
                             dict(width=8, depth=3, activation="relu", norm="batch"), {}),
    "mlp3_nh32": _Entry(mlp, PAPER, dict(width=32, depth=3, activation="relu", norm="none"),
                        dict(norm_first=True)),
    "fc-tanh": _fc("tanh"),
    "fc-relu": _fc("relu"),
    "fc-elu": _fc("elu"),
    "cnn-relu": _cnn("relu", "none"),
    "cnn-tanh": _cnn("tanh", "none"),
    "cnn-relu-bn": _cnn("relu", "batch"),
    "cnn-tanh-bn": _cnn("tanh", "batch"),
    "resnet32": _Entry(resnet, RESNET_COHEN, dict(width=16, depth=5, activation="relu", norm="batch"), {}),
    "vgg11": _vgg11("none"),
    "vgg11-bn": _vgg11("batch"),
}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, seed: int = 0,
                **options: Any) -> keras.Model:
    """Build the catalog model ``name`` for ``input_shape``, initialised from ``seed``.

    The model is a built functional ``keras.Model`` that outputs logits. The
    same seed gives identical weights. ``options`` change the defaults listed
    in ``catalog.MODEL_OPTIONS`` (width, depth, activation, norm); anything
    else raises ``ValueError``. Layers take the global Keras dtype policy: for
    float64 call ``keras.config.set_dtype_policy("float64")`` first
    (``set_floatx`` alone stops working once a policy has been used).

    Trainable parameters at the defaults: vgg10_base8_bn 32,782 and
    resnet20_base8 68,050 (32x32x3, 10 classes); mlp3_nh32 27,562 (28x28x1).

    Example:

    ```python
    from eoskeras.models import build_model
    model = build_model("resnet20_base8", (32, 32, 3), 10, seed=0)
    tiny = build_model("vgg11-bn", (32, 32, 3), 10, seed=1, width=4)
    ```
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(BUILDERS)}")
    _check_options(name, options)
    if not input_shape or not all(_is_int(n, minimum=1) for n in input_shape):
        raise ValueError(f"input_shape: expected positive integers, got {input_shape!r}")
    if not _is_int(num_classes, minimum=1):
        raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
    if not _is_int(seed, minimum=0):
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    entry = BUILDERS[name]
    settings = {**entry.defaults, **options}
    factory = LayerFactory(seed, entry.init, settings.pop("activation"), settings.pop("norm"))
    # keras.Input follows floatx, not the dtype policy; float64 inputs would
    # otherwise be rounded to float32 before reaching float64 layers.
    dtype = keras.config.dtype_policy().variable_dtype
    inputs = keras.Input(shape=tuple(input_shape), dtype=dtype, name="inputs")
    outputs = entry.family(factory, inputs, num_classes, **settings, **entry.fixed)
    return keras.Model(inputs, outputs, name=name.replace("-", "_"))


def _check_options(name: str, options: dict[str, Any]) -> None:
    allowed = MODEL_OPTIONS[name]
    for option, value in options.items():
        if option not in allowed:
            raise ValueError(f"{name}: unknown option {option!r}; allowed: {', '.join(allowed)}")
        kind = OPTION_TYPES[option]
        if isinstance(kind, tuple):
            if value not in kind:
                raise ValueError(f"{name}: option {option}={value!r}; expected one of {', '.join(kind)}")
        elif not _is_int(value, minimum=1):
            raise ValueError(f"{name}: option {option}={value!r}; expected a positive integer")


def _is_int(value: Any, minimum: int) -> bool:
    # bool is an int subclass, and never a meaningful width or seed.
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
