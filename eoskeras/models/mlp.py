"""Fully connected networks: the paper's MLP3_nh32 and Cohen et al.'s fc-* nets."""
from __future__ import annotations

import keras

from eoskeras.models.layers import LayerFactory


def mlp(f: LayerFactory, x: keras.KerasTensor, num_classes: int, *, width: int, depth: int,
        norm_first: bool) -> keras.KerasTensor:
    """Flatten, ``depth`` hidden layers of ``width`` units, then linear logits.

    Each hidden layer is Dense -> norm -> activation when ``norm_first``, else
    Dense -> activation -> norm (Cohen et al.'s order); no norm by default.
    Parameters without norm: ``(d_in + 1) w + (depth - 1)(w + 1) w + (w + 1) C``.
    """
    x = keras.layers.Flatten(name="flatten")(x)
    for i in range(1, depth + 1):
        x = f.norm_act(f.dense(x, width, f"dense{i}"), f"dense{i}", norm_first)
    return f.dense(x, num_classes, "logits")
