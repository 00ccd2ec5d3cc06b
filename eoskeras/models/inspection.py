"""Questions about a built model's layers.

Example: ``has_batch_norm(build_model("vgg10_base8_bn", (28, 28, 1), 10))`` is True.
"""
from __future__ import annotations

import keras


def has_batch_norm(model: keras.Model) -> bool:
    """True when any layer, nested models included, is a BatchNormalization:
    then the loss depends on how examples are grouped into batches."""
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())
