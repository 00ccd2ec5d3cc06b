"""Hot paths trace once: no retracing per training step or per HVP."""
from __future__ import annotations

import keras
import numpy as np

import eoskeras


class CountingTraces(eoskeras.FullBatchModel):
    """Python in train_step runs only while TensorFlow traces it."""

    traces = 0

    def train_step(self, data):
        CountingTraces.traces += 1
        return super().train_step(data)


def test_training_steps_and_hvps_do_not_retrace():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((130, 6)).astype("float32"), rng.integers(0, 3, 130)
    model = CountingTraces(net, physical_batch_size=50)  # ragged last micro-batch
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit_full_batch(x, y, steps=20)
    assert CountingTraces.traces == 1

    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, micro_batch_size=50)
    tracker = eoskeras.EigenTracker(k=3, tol=1e-4)

    def counts():
        return (oracle._hvp_chunk.experimental_get_tracing_count(),
                oracle._hvp_block_chunk.experimental_get_tracing_count())

    tracker.update(oracle)
    oracle.hvp(rng.standard_normal(oracle.dim))
    oracle.hvp_block(rng.standard_normal((oracle.dim, 3)))
    warm = counts()
    # One trace per micro-batch shape (full and ragged), times block widths 1..k.
    assert warm[0] == 2 and warm[1] <= 2 * 3
    for _ in range(3):
        net.trainable_variables[0].assign(net.trainable_variables[0] * 0.99)  # training moved the weights
        tracker.update(oracle)
        oracle.hvp(rng.standard_normal(oracle.dim))
    assert counts()[0] == warm[0] and counts()[1] <= 2 * 3
