"""Plain convolutional networks: Cohen et al.'s small CNNs and the VGG family."""
from __future__ import annotations

import keras

from eoskeras.models.layers import LayerFactory

# Channel multipliers of the base width, one tuple per block; a 2x2 max-pool
# follows every block.
VGG10 = ((1, 1, 1), (2, 2, 2), (4, 4, 4))
VGG11 = ((1,), (2,), (4, 4), (8, 8), (8, 8))  # 64, M, 128, M, 256, 256, M, 512, 512, M, ...


def cohen_cnn(f: LayerFactory, x: keras.KerasTensor, num_classes: int, *, width: int,
              depth: int) -> keras.KerasTensor:
    """``depth`` blocks of 3x3 conv (``width`` channels) -> activation -> norm -> 2x2 max-pool,
    then flatten and linear logits.

    The norm after the activation follows Cohen et al.'s BN networks.
    """
    _check_poolable(x, depth, "cnn")
    for i in range(1, depth + 1):
        x = f.norm_act(f.conv(x, width, f"conv{i}"), f"conv{i}", norm_first=False)
        x = keras.layers.MaxPooling2D(2, name=f"conv{i}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return f.dense(x, num_classes, "logits")


def vgg(f: LayerFactory, x: keras.KerasTensor, num_classes: int, *, width: int,
        blocks: tuple[tuple[int, ...], ...], head: tuple[float, ...],
        head_norm: bool) -> keras.KerasTensor:
    """VGG: blocks of 3x3 conv -> norm -> activation, each block ending in a 2x2
    max-pool; then flatten, hidden dense layers of ``width * m`` units for each
    ``m`` in ``head`` (each -> norm if ``head_norm`` -> activation) and linear
    logits. Channels and hidden units both scale with ``width``.
    """
    _check_poolable(x, len(blocks), "vgg")
    for b, block in enumerate(blocks, 1):
        for j, multiplier in enumerate(block, 1):
            name = f"block{b}_conv{j}"
            x = f.norm_act(f.conv(x, width * multiplier, name), name)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for k, multiplier in enumerate(head, 1):
        x = f.dense(x, max(1, round(width * multiplier)), f"head{k}")
        x = f.norm_act(x, f"head{k}") if head_norm else f.act(x, f"head{k}")
    return f.dense(x, num_classes, "logits")


def _check_poolable(x: keras.KerasTensor, pools: int, family: str) -> None:
    height, width = x.shape[1:3]
    if min(height, width) < 2**pools:
        raise ValueError(f"{family} with {pools} 2x2 max-pools needs inputs of at least "
                         f"{2**pools}x{2**pools}, got {height}x{width}")
