"""Names of the model builders eoskeras ships (no TensorFlow import).

Recipe validation reads this list before TensorFlow is loaded; a test checks
that it matches the registered builders exactly.
"""
from __future__ import annotations

MODELS: dict[str, str] = {
    # Wang & Roberts (arXiv 2412.17613).
    "vgg10_base8_bn": "VGG-10, widths 8/16/32, BatchNorm after every conv (~32.8k params on CIFAR-10)",
    "resnet20_base8": "ResNet-20, widths 8/16/32, BatchNorm, zero-padded identity shortcuts (~68k params)",
    "mlp3_nh32": "MLP with three hidden ReLU layers of 32 units (~27.6k params on Fashion-MNIST)",
    # Cohen et al. 2021.
    "fc-tanh": "fully connected 200-200, tanh",
    "fc-relu": "fully connected 200-200, ReLU",
    "fc-elu": "fully connected 200-200, ELU",
    "cnn-relu": "two 3x3 convs (32 ch) with max-pooling, ReLU, no BatchNorm",
    "cnn-tanh": "two 3x3 convs (32 ch) with max-pooling, tanh, no BatchNorm",
    "cnn-relu-bn": "cnn-relu with BatchNorm after each conv",
    "cnn-tanh-bn": "cnn-tanh with BatchNorm after each conv",
    "resnet32": "ResNet-32 (widths 16/32/64) with BatchNorm",
    "vgg11": "VGG-11 without BatchNorm",
    "vgg11-bn": "VGG-11 with BatchNorm",
}

# Options a recipe may pass to a builder (``model.options``), with their types
# and allowed values; each builder accepts the subset listed in MODEL_OPTIONS.
OPTION_TYPES: dict[str, object] = {
    "width": int,  # base width (hidden units, or channels of the first stage)
    "depth": int,  # number of hidden layers / blocks per stage / convs
    "activation": ("relu", "tanh", "elu", "gelu", "silu", "linear"),
    "norm": ("none", "batch", "layer", "group"),
}

MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "vgg10_base8_bn": ("width", "activation", "norm"),
    "resnet20_base8": ("width", "depth", "activation", "norm"),
    "mlp3_nh32": ("width", "depth", "activation", "norm"),
    "fc-tanh": ("width", "depth", "activation", "norm"),
    "fc-relu": ("width", "depth", "activation", "norm"),
    "fc-elu": ("width", "depth", "activation", "norm"),
    "cnn-relu": ("width", "depth", "activation", "norm"),
    "cnn-tanh": ("width", "depth", "activation", "norm"),
    "cnn-relu-bn": ("width", "depth", "activation", "norm"),
    "cnn-tanh-bn": ("width", "depth", "activation", "norm"),
    "resnet32": ("width", "depth", "activation", "norm"),
    "vgg11": ("width", "activation", "norm"),
    "vgg11-bn": ("width", "activation", "norm"),
}
