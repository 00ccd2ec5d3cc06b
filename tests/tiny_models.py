"""Tiny float64 models and an independent dense-Hessian reference.

The reference Hessian is built column by column from central finite
differences of the *stock* model's first derivatives (exact in Keras even
through normalisation layers), so it shares nothing with the engine's
second-derivative path: no twin, no exact-norm layers, no double backprop.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from eoskeras.losses import get_loss

D = "float64"


def _seq(input_shape, layers):
    return keras.Sequential([keras.Input(input_shape, dtype=D), *layers])


def _dense(units, **kw):
    return keras.layers.Dense(units, dtype=D, **kw)


def mlp_tanh():
    return _seq((4,), [_dense(6, activation="tanh"), _dense(3)])


def cnn_maxpool():
    return _seq((6, 6, 1), [keras.layers.Conv2D(2, 3, activation="tanh", dtype=D),
                            keras.layers.MaxPooling2D(2, dtype=D), keras.layers.Flatten(dtype=D), _dense(3)])


def cnn_batchnorm():
    return _seq((5, 5, 1), [keras.layers.Conv2D(3, 3, dtype=D), keras.layers.BatchNormalization(dtype=D),
                            keras.layers.Activation("tanh", dtype=D), keras.layers.Flatten(dtype=D), _dense(3)])


def mlp_layernorm():
    return _seq((4,), [_dense(6), keras.layers.LayerNormalization(dtype=D),
                       keras.layers.Activation("tanh", dtype=D), _dense(3)])


def cnn_groupnorm():
    return _seq((4, 4, 1), [keras.layers.Conv2D(4, 3, dtype=D), keras.layers.GroupNormalization(2, dtype=D),
                            keras.layers.Activation("tanh", dtype=D), keras.layers.Flatten(dtype=D), _dense(3)])


def mlp_regularized():
    return _seq((4,), [_dense(6, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.05)), _dense(3)])


MODELS = {
    "mlp_tanh": mlp_tanh,
    "cnn_maxpool": cnn_maxpool,
    "cnn_batchnorm": cnn_batchnorm,
    "mlp_layernorm": mlp_layernorm,
    "cnn_groupnorm": cnn_groupnorm,
    "mlp_regularized": mlp_regularized,
}


def build(name: str, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return MODELS[name]()


def data_for(model: keras.Model, n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *model.input_shape[1:]))
    y = rng.integers(0, 3, size=n)
    return x, y


def reference_gradient(model, loss, x, y, training: bool, micro_batch_size: int):
    """Gradient of the micro-batch-weighted mean loss via the stock model."""
    loss_fn = get_loss(loss)
    non_trainable = [v.value for v in model.non_trainable_variables]

    @tf.function
    def chunk(weights, xc, yc):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            out, _, reg = model.stateless_call(weights, non_trainable, xc, training=training, return_losses=True)
            value = tf.reduce_mean(loss_fn(yc, out)) + tf.add_n([tf.constant(0.0, D), *reg])
        return tape.gradient(value, weights)

    shapes = [tuple(v.shape) for v in model.trainable_variables]
    sizes = [int(np.prod(s)) for s in shapes]

    def gradient(flat):
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        weights = [tf.constant(p.reshape(s)) for p, s in zip(parts, shapes)]
        total = np.zeros(len(flat))
        for i in range(0, len(x), micro_batch_size):
            xc, yc = x[i:i + micro_batch_size], y[i:i + micro_batch_size]
            g = chunk(weights, tf.constant(xc), tf.constant(yc))
            total += len(xc) / len(x) * np.concatenate([np.ravel(t.numpy()) for t in g])
        return total

    return gradient


def finite_difference_hessian(model, loss, x, y, training=True, micro_batch_size=None, h=1e-5):
    """Dense Hessian by central differences of the stock gradient, column by column."""
    grad = reference_gradient(model, loss, x, y, training, micro_batch_size or len(x))
    w0 = np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables]).astype(np.float64)
    cols = []
    for i in range(len(w0)):
        e = np.zeros_like(w0)
        e[i] = h
        cols.append((grad(w0 + e) - grad(w0 - e)) / (2 * h))
    return np.stack(cols, axis=1)


def dense_from_hvps(oracle) -> np.ndarray:
    return np.stack([oracle.hvp(np.eye(oracle.dim)[i]) for i in range(oracle.dim)], axis=1)
