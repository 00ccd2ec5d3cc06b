"""The Edge of Stability, reproduced on real data (the embedded MNIST digits).

fc-tanh (64-64) with MSE, full-batch GD, 1,000 class-balanced digits. The
step sizes are set relative to 2/lambda_0, the threshold at initialisation.
"""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

import eoskeras

pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=None)
def data():
    spec = eoskeras.DataSpec("mnist5k", train_size=1000, test_size=200, subset="balanced", flatten=True,
                             labels="onehot")
    return eoskeras.load_data(spec)


@functools.lru_cache(maxsize=None)
def train(relative: float, steps: int, top_k: int):
    """Train at eta = relative * 2 / lambda_0; returns (monitor records, losses, eta)."""
    bundle = data()
    x, y = bundle.x_train, bundle.y_train
    net = eoskeras.build_model("fc-tanh", bundle.input_shape, 10, seed=0, width=64)
    lambda0 = eoskeras.lanczos(eoskeras.HessianOracle(net, "mse", x, y), k=1, tol=1e-5).lambda_max
    eta = relative * 2 / lambda0
    model = eoskeras.FullBatchModel(net, loss="mse")
    model.compile(optimizer=keras.optimizers.SGD(eta))
    monitor = eoskeras.SharpnessMonitor(x, y, every=10, top_k=top_k, tol=1e-3)
    history = model.fit_full_batch(x, y, steps=steps, callbacks=[monitor])
    return monitor.public_records(), np.array(history.history["loss"]), eta


def test_sharpness_rises_to_two_over_eta_and_hovers_there():
    records, losses, eta = train(0.9, 600, 1)
    ratio = np.array([r["sharpness_ratio"] for r in records])
    assert ratio[0] == pytest.approx(0.9, rel=0.01)
    crossed = int(np.argmax(ratio >= 0.97))
    assert crossed > 0, "the sharpness never reached 2/eta"
    assert ratio[:crossed].max() < 0.97 and ratio[crossed] >= 0.97  # it rose into the threshold
    after = ratio[crossed:]
    assert len(after) >= 10, "too little training at the edge to judge it"
    assert 0.9 <= np.median(after) <= 1.2
    assert losses[-1] < 0.5 * losses[0]  # down overall ...
    assert np.sum(np.diff(losses[crossed * 10:]) > 0) >= 3  # ... but not monotonically


def test_far_below_the_threshold_gd_is_stable_and_monotone():
    records, losses, eta = train(0.2, 300, 5)
    ratio = np.array([r["sharpness_ratio"] for r in records])
    assert ratio.max() < 0.5
    assert np.all(np.diff(losses) < 0)


def test_eigenvectors_rotate_more_above_the_threshold():
    below, _, _ = train(0.2, 300, 5)
    above, _, _ = train(2.0, 300, 5)
    assert above[0]["sharpness_ratio"] > 1.9  # really above, from step 0
    similarity_below, similarity_above = below[-1]["similarity_first"], above[-1]["similarity_first"]
    assert similarity_below > 0.7
    assert similarity_above < similarity_below - 0.25
