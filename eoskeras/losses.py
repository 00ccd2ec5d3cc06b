"""Per-example loss functions (and the accuracy) shared by the curvature engine and training.

Losses are returned *per example* so that callers can weight micro-batches by
their example count and so that the computation stays in the caller's dtype
(Keras ``Loss.__call__`` casts predictions to ``floatx``, which would silently
turn a float64 Hessian into a float32 one).

Example:

```python
from eoskeras.losses import get_loss
loss_fn = get_loss("mse")            # 0.5 * ||f(x) - onehot(y)||^2 per example
per_example = loss_fn(y_true, logits)
```
"""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf

from eoskeras.training.catalog import LOSSES as LOSS_NAMES

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def cross_entropy(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy from logits; integer or one-hot labels."""
    if y_true.shape.rank == logits.shape.rank:
        labels = tf.cast(y_true, logits.dtype)
        return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def half_squared_error(y_true: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Cohen et al.'s MSE: 0.5 * ||f(x) - onehot(y)||^2 (summed over outputs).

    Integer labels are one-hot encoded against the output width.
    """
    if y_true.shape.rank != outputs.shape.rank:
        y_true = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), tf.shape(outputs)[-1])
    diff = outputs - tf.cast(y_true, outputs.dtype)
    return 0.5 * tf.reduce_sum(tf.square(diff), axis=-1)


_NAMED: dict[str, PerExampleLoss] = {"cross_entropy": cross_entropy, "mse": half_squared_error}


def get_loss(loss: str | keras.losses.Loss | PerExampleLoss) -> PerExampleLoss:
    """Resolve ``loss`` to a function ``(y_true, y_pred) -> per-example losses``.

    ``loss`` is one of ``LOSS_NAMES``, a Keras loss object or identifier
    (e.g. ``"sparse_categorical_crossentropy"``), or a callable returning
    per-example values.
    """
    if isinstance(loss, str) and loss in _NAMED:
        return _NAMED[loss]
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # Loss.call is the unreduced, un-cast computation.
        return loss.call
    if callable(loss):
        return loss
    raise ValueError(f"loss: got {loss!r}; allowed: one of {LOSS_NAMES}, a Keras loss, or a callable")


def accuracy_per_example(y_true, outputs):
    """1.0 where argmax(outputs) equals the label (integer or one-hot)."""
    predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
    if y_true.shape.rank == outputs.shape.rank:
        labels = tf.argmax(y_true, axis=-1, output_type=tf.int32)
    else:
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    return tf.cast(tf.equal(predicted, labels), tf.float32)
