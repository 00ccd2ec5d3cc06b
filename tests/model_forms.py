"""One small conv net in every form a Keras user may hand over: Sequential,
Functional and subclassed; built in memory or loaded from a ``.keras`` file;
with or without a normalisation layer. The subclassed class is registered so
that ``.keras`` files of it load (also in ``eoskeras spectrum``)."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

KINDS = ("sequential", "functional", "subclassed")
NORMS = (None, "batch", "layer", "group")


def _norm_layer(norm: str | None) -> keras.layers.Layer:
    if norm == "batch":
        return keras.layers.BatchNormalization()
    if norm == "layer":
        return keras.layers.LayerNormalization()
    if norm == "group":
        return keras.layers.GroupNormalization(2)
    return keras.layers.Identity()


def _layers(filters: int, classes: int, norm: str | None) -> list[keras.layers.Layer]:
    return [keras.layers.Conv2D(filters, 3), _norm_layer(norm), keras.layers.Activation("tanh"),
            keras.layers.Flatten(), keras.layers.Dense(classes)]


@keras.saving.register_keras_serializable(package="eoskeras_tests")
class SubclassedNet(keras.Model):
    """The same network written as a keras.Model subclass."""

    def __init__(self, filters: int = 2, classes: int = 3, norm: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.classes, self.norm = filters, classes, norm
        self.conv, self.normalise, self.act, self.flat, self.head = _layers(filters, classes, norm)

    def call(self, x, training=False):
        return self.head(self.flat(self.act(self.normalise(self.conv(x), training=training))))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "classes": self.classes, "norm": self.norm}


def build_form(kind: str, norm: str | None, input_shape=(5, 5, 1), filters: int = 2, classes: int = 3) -> keras.Model:
    """The network in form ``kind``, built (weights still random)."""
    if kind == "sequential":
        model = keras.Sequential([keras.Input(input_shape), *_layers(filters, classes, norm)])
    elif kind == "functional":
        inputs = keras.Input(input_shape)
        x = inputs
        for layer in _layers(filters, classes, norm):
            x = layer(x)
        model = keras.Model(inputs, x)
    else:
        model = SubclassedNet(filters, classes, norm)
        model(np.zeros((1, *input_shape), dtype=keras.config.floatx()))
    return model


def same_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give ``model`` the weights every form shares (drawn from ``seed`` in variable order)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.uniform(-0.6, 0.6, v.shape) + (1.0 if v.path.endswith("gamma") else 0.0))
    return model


def loaded(model: keras.Model, directory: Path, name: str) -> keras.Model:
    """``model`` saved with model.save and loaded back, as a user would."""
    path = Path(directory) / f"{name}.keras"
    model.save(path)
    return keras.models.load_model(path, safe_mode=True)
