"""Every model builder gives exact HVPs: a tiny float64 instance of each,
BatchNorm in batch mode, against central differences of its stock gradient."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import eoskeras
from eoskeras.models.catalog import MODELS
from tiny_models import reference_gradient

# Small widths and the smallest inputs each architecture accepts.
TINY = {
    "vgg10_base8_bn": ((8, 8, 2), {"width": 2}),
    "resnet20_base8": ((8, 8, 2), {"width": 2, "depth": 1}),
    "mlp3_nh32": ((4, 4, 1), {"width": 5}),
    "resnet32": ((8, 8, 2), {"width": 2, "depth": 1}),
    "vgg11": ((32, 32, 1), {"width": 1}),
    "vgg11-bn": ((32, 32, 1), {"width": 1}),
}
DEFAULT = ((6, 6, 1), {"width": 3})


@pytest.fixture
def float64_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builder_hvp_matches_finite_differences(name, float64_policy):
    shape, options = TINY.get(name, DEFAULT)
    if name.startswith("fc-"):
        options = {"width": 4}
    net = eoskeras.build_model(name, shape, 3, seed=0, **options)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, *shape)), rng.integers(0, 3, 6)
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64", bn_mode="batch")
    v = rng.standard_normal(oracle.dim)
    v /= np.linalg.norm(v)
    grad = reference_gradient(net, "cross_entropy", x, y, training=True, micro_batch_size=len(x))
    w, h = oracle.weights(), 1e-6
    fd = (grad(w + h * v) - grad(w - h * v)) / (2 * h)
    hv = oracle.hvp(v)
    assert np.linalg.norm(hv - fd) <= 1e-6 * np.linalg.norm(fd), (name, oracle.dim)
    # The trace's quadratic forms take the forward (Taylor) rules on every builder's ops.
    assert oracle.quadratic_forms(v[:, None])[0] == pytest.approx(v @ hv, rel=1e-10, abs=1e-12 * np.linalg.norm(hv))
    assert oracle.forms_method == "taylor"


def test_a_keras_applications_network_gets_exact_hvps(float64_policy):
    """A stock network built by Keras (nested blocks, BatchNorm, hard-swish,
    squeeze-excite), not by eoskeras: the twin handles it as it comes."""
    net = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=3, alpha=0.75,
                                              minimalistic=True, include_preprocessing=False,
                                              dropout_rate=0.0)  # so that the stock reference is deterministic
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 32, 32, 3)), rng.integers(0, 3, 4)
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    v = rng.standard_normal(oracle.dim)
    v /= np.linalg.norm(v)
    grad = reference_gradient(net, "cross_entropy", x, y, training=True, micro_batch_size=len(x))
    w, h = oracle.weights(), 1e-6
    fd = (grad(w + h * v) - grad(w - h * v)) / (2 * h)
    assert np.linalg.norm(oracle.hvp(v) - fd) <= 1e-6 * np.linalg.norm(fd)
