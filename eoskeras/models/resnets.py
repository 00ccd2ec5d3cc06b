"""CIFAR-style residual networks (He et al. 2016, section 4.2) with identity shortcuts."""
from __future__ import annotations

import keras

from eoskeras.models.layers import LayerFactory

STAGES = 3  # widths w, 2w, 4w; each later stage halves the resolution


def resnet(f: LayerFactory, x: keras.KerasTensor, num_classes: int, *, width: int,
           depth: int) -> keras.KerasTensor:
    """Stem conv -> norm -> activation, ``STAGES`` stages of ``depth`` basic blocks,
    global average pooling, linear logits. ResNet-(6 depth + 2).

    Shortcuts are parameter-free ("option A"): identity, or subsampling plus
    zero channels where a stage changes shape.
    """
    x = f.norm_act(f.conv(x, width, "stem_conv"), "stem_conv")
    for stage in range(STAGES):
        for block in range(depth):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(f, x, width * 2**stage, strides, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return f.dense(x, num_classes, "logits")


def basic_block(f: LayerFactory, x: keras.KerasTensor, channels: int, strides: int,
                name: str) -> keras.KerasTensor:
    """activation(norm(conv(activation(norm(conv(x))))) + shortcut(x))."""
    y = f.norm_act(f.conv(x, channels, f"{name}_conv1", strides), f"{name}_conv1")
    y = f.norm(f.conv(y, channels, f"{name}_conv2"), f"{name}_conv2")
    shortcut = x if strides == 1 and x.shape[-1] == channels else zero_pad_shortcut(
        x, channels, strides, name)
    return f.act(keras.layers.Add(name=f"{name}_add")([y, shortcut]), f"{name}_out")


def zero_pad_shortcut(x: keras.KerasTensor, channels: int, strides: int,
                      name: str) -> keras.KerasTensor:
    """x[:, ::strides, ::strides] with zero channels added equally before and after.

    Built from stock layers only (so the model clones layer by layer): a 1x1
    average pool with a stride subsamples, and the channel axis is padded as
    the third axis of a 3-D padding.
    """
    if strides > 1:
        x = keras.layers.AveragePooling2D(1, strides=strides, name=f"{name}_subsample")(x)
    height, width, have = x.shape[1:]
    before = (channels - have) // 2
    x = keras.layers.Reshape((height, width, have, 1), name=f"{name}_to_3d")(x)
    x = keras.layers.ZeroPadding3D(((0, 0), (0, 0), (before, channels - have - before)),
                                   name=f"{name}_pad_channels")(x)
    return keras.layers.Reshape((height, width, channels), name=f"{name}_from_3d")(x)
