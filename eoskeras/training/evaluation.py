"""Loss and accuracy of a network on a data set, in inference mode."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from eoskeras.losses import get_loss
from eoskeras.training.full_batch import accuracy_per_example


def evaluate_network(network: keras.Model, loss: Any, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """Mean loss (without regularisation) and accuracy of ``network`` on (x, y),
    BatchNorm in inference mode, computed in chunks of ``batch_size``."""
    per_example = get_loss(loss)
    losses, hits = [], []
    for start in range(0, len(x), batch_size):
        outputs = network(x[start:start + batch_size], training=False)
        yc = tf.convert_to_tensor(y[start:start + batch_size])
        losses.append(np.asarray(per_example(yc, outputs), dtype=np.float64))
        hits.append(accuracy_per_example(yc, outputs).numpy())
    return float(np.concatenate(losses).mean()), float(np.concatenate(hits).mean())
