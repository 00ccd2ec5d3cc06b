"""Names of the model builders eoskeras ships (no TensorFlow import).

Recipe validation reads this list before TensorFlow is loaded; a test checks
that it matches the registered builders exactly.
"""
from __future__ import annotations

MODELS: dict[str, str] = {
    # Wang & Roberts (arXiv 2412.17613).
    "vgg10_base8_bn": "VGG-10, widths 8/16/32, conv-BN-ReLU, head Dense(4)-BN-ReLU, LeCun-normal "
                      "(32,782 trainable params on CIFAR-10)",
    "resnet20_base8": "ResNet-20, widths 8/16/32, BatchNorm, zero-padded identity shortcuts, no conv "
                      "bias, LeCun-normal (68,050 trainable params on CIFAR-10)",
    "mlp3_nh32": "MLP with three hidden ReLU layers of 32 units, LeCun-normal "
                 "(27,562 params on Fashion-MNIST)",
    # Cohen et al. 2021.
    "fc-tanh": "fully connected 200-200, tanh, PyTorch default init (656,810 params on CIFAR-10)",
    "fc-relu": "fully connected 200-200, ReLU, PyTorch default init",
    "fc-elu": "fully connected 200-200, ELU, PyTorch default init",
    "cnn-relu": "two 3x3 convs (32 ch) with max-pooling, ReLU, no BatchNorm (30,634 params on CIFAR-10)",
    "cnn-tanh": "two 3x3 convs (32 ch) with max-pooling, tanh, no BatchNorm",
    "cnn-relu-bn": "cnn-relu with BatchNorm after each activation (Cohen et al.'s order)",
    "cnn-tanh-bn": "cnn-tanh with BatchNorm after each activation (Cohen et al.'s order)",
    "resnet32": "ResNet-32 (widths 16/32/64) with BatchNorm, zero-padded identity shortcuts "
                "(464,154 trainable params)",
    "vgg11": "VGG-11 (64..512 channels) with a 512-512 classifier, no dropout, no BatchNorm "
             "(9,750,922 params)",
    "vgg11-bn": "vgg11 with BatchNorm after each conv",
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
