"""Loss and accuracy of a network on a data set, in inference mode."""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from eoskeras.losses import accuracy_per_example, get_loss
from eoskeras.micro_batches import sum_over_micro_batches


def evaluate_network(network: keras.Model, loss: Any, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """Mean loss (without regularisation) and accuracy of ``network`` on (x, y),
    BatchNorm in inference mode, computed in chunks of ``batch_size`` (float64 sums).

    Example: ``test_loss, test_accuracy = evaluate_network(net, "mse", x_test, y_test)``.
    """
    per_example = get_loss(loss)

    def chunk(xc, yc):
        outputs = network(xc, training=False)
        return tf.stack([tf.reduce_mean(tf.cast(per_example(yc, outputs), tf.float64)),
                         tf.reduce_mean(tf.cast(accuracy_per_example(yc, outputs), tf.float64))])

    total = tf.constant(len(x), tf.float64)
    mean_loss, accuracy = sum_over_micro_batches(chunk, tf.convert_to_tensor(x), tf.convert_to_tensor(y), batch_size,
                                                 total, tf.zeros([2], tf.float64)).numpy()
    return float(mean_loss), float(accuracy)
