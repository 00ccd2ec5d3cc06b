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

    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, micro_batch_size=50)  # 50, 50, 30
    tracker = eoskeras.EigenTracker(k=3, tol=1e-4)

    def counts():
        return (oracle._hvp.traced.experimental_get_tracing_count(),
                oracle._hvp_block.traced.experimental_get_tracing_count(),
                oracle._quadratic_forms.traced.experimental_get_tracing_count(),
                oracle.objective._loss_and_gradient.traced.experimental_get_tracing_count())

    oracle.hvp(rng.standard_normal(oracle.dim))
    oracle.hvp_block(rng.standard_normal((oracle.dim, 3)))
    oracle.quadratic_forms(rng.standard_normal((oracle.dim, 3)))
    oracle.loss_and_gradient()
    # One trace each serves the full and the short last micro-batch.
    assert counts() == (1, 1, 1, 1)
    for width in range(1, oracle.block_size + 1):  # every block width after the first call
        oracle.hvp_block(rng.standard_normal((oracle.dim, width)))
        oracle.quadratic_forms(rng.standard_normal((oracle.dim, width)))
    oracle.hvp_block(rng.standard_normal((oracle.dim, 2 * oracle.block_size + 3)))  # a short last block
    eoskeras.hutchpp_trace(oracle, 9)
    tracker.update(oracle)
    for _ in range(3):
        net.trainable_variables[0].assign(net.trainable_variables[0] * 0.99)  # training moved the weights
        tracker.update(oracle)
        oracle.hvp(rng.standard_normal(oracle.dim))
        oracle.hvp(rng.standard_normal(oracle.dim), at=oracle.weights())
    assert counts() == (1, 1, 1, 1)


def test_a_lone_column_after_a_block_takes_the_block_graph():
    """A tracker's one-residual expansion must not trace the vector HVP's graph
    once the block graph exists; before any block, one column takes ``hvp``."""
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)])
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 5)).astype("float32"), rng.integers(0, 3, 40)

    def traces(oracle):
        return (oracle._hvp.traced.experimental_get_tracing_count(),
                oracle._hvp_block.traced.experimental_get_tracing_count())

    first = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    column = rng.standard_normal((first.dim, 1))
    alone = first.hvp_block(column)
    assert traces(first) == (1, 0)

    blocked = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    blocked.hvp_block(rng.standard_normal((blocked.dim, 4)))
    after = blocked.hvp_block(column)
    assert traces(blocked) == (0, 1) and blocked.num_hvps == 5
    np.testing.assert_allclose(after, alone, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(after[:, 0], first.hvp(column[:, 0]), rtol=1e-12, atol=1e-14)
