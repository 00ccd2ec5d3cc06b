"""The engine against an independent reference: dense float64 Hessians by
finite differences of the stock models' gradients."""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

import eoskeras
from tiny_models import MODELS, build, data_for, dense_from_hvps, finite_difference_hessian

# (model, bn_mode); BN models are checked in both modes.
CASES = [(name, "batch") for name in MODELS] + [("cnn_batchnorm", "inference")]


@functools.lru_cache(maxsize=None)
def setup(name: str, bn_mode: str, loss: str = "cross_entropy"):
    model = build(name)
    x, y = data_for(model)
    if bn_mode == "inference":
        # Non-trivial moving statistics, so inference mode differs from batch mode.
        for v in model.non_trainable_variables:
            v.assign(np.random.default_rng(1).uniform(0.5, 1.5, v.shape))
    oracle = eoskeras.HessianOracle(model, loss, x, y, micro_batch_size=len(x), bn_mode=bn_mode, dtype="float64")
    reference = finite_difference_hessian(model, loss, x, y, training=bn_mode == "batch")
    reference = (reference + reference.T) / 2
    return model, x, y, oracle, reference


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("name,bn_mode", CASES)
def test_hvps_match_finite_differences(name, bn_mode):
    _, _, _, oracle, reference = setup(name, bn_mode)
    dense = dense_from_hvps(oracle)
    assert rel(dense, reference) < 1e-6
    assert np.abs(dense - dense.T).max() < 1e-10 * np.abs(dense).max()
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((2, oracle.dim))
    assert u @ oracle.hvp(v) == pytest.approx(v @ oracle.hvp(u), rel=1e-10)


@pytest.mark.parametrize("name,bn_mode", CASES)
def test_lanczos_top5_and_smallest_match_dense_eigh(name, bn_mode):
    _, _, _, oracle, reference = setup(name, bn_mode)
    evals, evecs = np.linalg.eigh(reference)
    top, top_vecs = evals[::-1][:5], evecs[:, ::-1][:, :5]
    spectrum = eoskeras.lanczos(oracle, k=5, tol=1e-10, smallest=True, seed=0)
    assert spectrum.converged
    np.testing.assert_allclose(spectrum.eigenvalues, top, rtol=1e-6, atol=1e-9 * abs(top[0]))
    assert spectrum.smallest == pytest.approx(evals[0], rel=1e-6, abs=1e-9 * abs(top[0]))
    gaps = np.abs(np.diff(evals[::-1][:6]))
    for i in range(5):
        # Only vectors of well-separated eigenvalues are defined to 1e-4.
        if min(gaps[max(i - 1, 0)], gaps[i]) > 1e-3 * abs(top[0]):
            assert eoskeras.vector_cosines(spectrum.eigenvectors[:, i], top_vecs[:, i])[0] >= 0.9999
    # The reported residuals are the true ||Hv - lambda v||.
    explicit = np.linalg.norm(reference @ spectrum.eigenvectors - spectrum.eigenvectors * spectrum.eigenvalues, axis=0)
    assert np.all(explicit <= 1e-6 * abs(top[0]))
    assert spectrum.info["bn_mode"] == bn_mode and spectrum.info["dtype"] == "float64"


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_batchnorm", "cnn_groupnorm"])
def test_trace_within_three_standard_errors(name):
    _, _, _, oracle, reference = setup(name, "batch")
    exact = np.trace(reference)
    for estimate in (eoskeras.hutchinson_trace(oracle, 60, seed=1), eoskeras.hutchpp_trace(oracle, 60, seed=1)):
        assert estimate.num_hvps == 60
        assert abs(estimate.value - exact) <= 3 * estimate.stderr + 1e-9 * abs(exact), estimate
        assert estimate.info["quadratic_forms"] == "taylor"


@pytest.mark.parametrize("name", list(MODELS))
def test_quadratic_forms_are_those_of_the_dense_hessian(name):
    _, _, _, oracle, reference = setup(name, "batch")
    oracle.block_size = 1  # columns then go in chunks of 16: 37 columns take three calls
    vectors = np.random.default_rng(4).standard_normal((oracle.dim, 37))
    before = oracle.num_hvps
    forms = oracle.quadratic_forms(vectors)
    assert oracle.num_hvps - before == 37
    assert oracle.forms_method == "taylor"  # every op of these models has a forward rule
    exact = dense_from_hvps(oracle)  # the oracle's own products, exact to rounding
    np.testing.assert_allclose(forms, np.einsum("ij,ij->j", vectors, exact @ vectors), rtol=1e-11)
    assert rel(forms, np.einsum("ij,ij->j", vectors, reference @ vectors)) < 1e-6  # finite differences
    with pytest.raises(ValueError, match="vectors: expected shape"):
        oracle.quadratic_forms(vectors[:-1])
    model, x, y = oracle.model, *oracle.objective.data
    forward = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=len(x), dtype="float64",
                                     hvp_mode="forward")
    np.testing.assert_allclose(forward.quadratic_forms(vectors[:, :3]), forms[:3], rtol=1e-10)
    # Micro-batches: the forward rules run inside the loop over them (on weights it captures).
    chunked = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=10, dtype="float64")
    np.testing.assert_allclose(chunked.quadratic_forms(vectors[:, :4]),
                               np.einsum("ij,ij->j", vectors[:, :4], chunked.hvp_block(vectors[:, :4])), rtol=1e-11)
    assert chunked.forms_method == "taylor"


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_maxpool", "mlp_regularized"])
def test_hvp_independent_of_micro_batch_size(name):
    model = build(name)
    x, y = data_for(model, n=150)
    v = np.random.default_rng(3).standard_normal(sum(int(np.prod(w.shape)) for w in model.trainable_variables))
    results = [
        eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=mb, dtype="float64").hvp(v)
        for mb in (7, 64, len(x))
    ]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-12, atol=1e-14 * np.abs(results[0]).max())


@pytest.mark.parametrize("name,bn_mode", [("mlp_tanh", "batch"), ("cnn_batchnorm", "batch"), ("mlp_layernorm", "batch")])
def test_forward_over_reverse_agrees_with_double_backprop(name, bn_mode):
    model, x, y, oracle, _ = setup(name, bn_mode)
    forward = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=len(x), bn_mode=bn_mode,
                                     dtype="float64", hvp_mode="forward")
    v = np.random.default_rng(4).standard_normal(oracle.dim)
    np.testing.assert_allclose(forward.hvp(v), oracle.hvp(v), rtol=1e-10, atol=1e-12)


def test_mse_loss_and_regulariser_are_in_the_loss():
    model, x, y, oracle, reference = setup("mlp_regularized", "batch", "mse")
    out = model(x).numpy()
    onehot = np.eye(3)[y]
    kernel = model.layers[0].kernel.numpy()
    expected = 0.5 * np.mean(np.sum((out - onehot) ** 2, axis=1)) + 0.05 * np.sum(kernel**2)
    # Keras keeps the L2 factor in float32 (0.05 -> 0.0500000007).
    assert oracle.loss() == pytest.approx(expected, rel=1e-8)
    assert rel(dense_from_hvps(oracle), reference) < 1e-6


@pytest.mark.parametrize("name", ["cnn_batchnorm", "mlp_layernorm", "cnn_groupnorm"])
def test_stock_keras_normalisation_would_be_wrong(name):
    """Documents the trap the twin avoids: plain double backprop through
    Keras's own normalisation layers misses a second-derivative term."""
    import tensorflow as tf

    _, _, _, oracle, reference = setup(name, "batch")
    model, x, y = oracle.model, *data_for(oracle.model)
    weights = [v.value for v in model.trainable_variables]
    v_parts = [tf.constant(np.random.default_rng(5).standard_normal(w.shape)) for w in weights]
    with tf.GradientTape() as outer:
        outer.watch(weights)
        with tf.GradientTape() as inner:
            inner.watch(weights)
            out, _ = model.stateless_call(weights, [v.value for v in model.non_trainable_variables], x, training=True)
            loss = tf.reduce_mean(eoskeras.losses.get_loss("cross_entropy")(tf.constant(y), out))
        g = inner.gradient(loss, weights)
        gv = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(g, v_parts)])
    naive = np.concatenate([np.ravel(t.numpy()) for t in outer.gradient(gv, weights)])
    flat_v = np.concatenate([np.ravel(t.numpy()) for t in v_parts])
    assert rel(naive, reference @ flat_v) > 1e-4
    assert rel(oracle.hvp(flat_v), reference @ flat_v) < 1e-6


def test_float32_oracle_close_to_float64_reference():
    _, _, _, _, reference = setup("cnn_batchnorm", "batch")
    model32 = keras.models.clone_model(build("cnn_batchnorm"), clone_function=lambda layer: type(layer).from_config(
        {**layer.get_config(), "dtype": "float32"}))
    model32.set_weights(build("cnn_batchnorm").get_weights())
    x, y = data_for(model32)
    oracle32 = eoskeras.HessianOracle(model32, "cross_entropy", x.astype(np.float32), y, dtype="float32")
    top32 = eoskeras.lanczos(oracle32, k=3, tol=1e-5, seed=0).eigenvalues
    np.testing.assert_allclose(top32, np.linalg.eigvalsh(reference)[::-1][:3], rtol=1e-4)


@pytest.mark.parametrize("name,bn_mode", [("cnn_maxpool", "batch"), ("cnn_batchnorm", "batch"),
                                          ("cnn_groupnorm", "batch"), ("mlp_regularized", "batch")])
def test_vectorised_block_hvps_equal_single_hvps(name, bn_mode):
    _, _, _, oracle, _ = setup(name, bn_mode)
    block = np.random.default_rng(6).standard_normal((oracle.dim, oracle.block_size + 3))  # two passes
    before = oracle.num_hvps
    together = oracle.hvp_block(block)
    assert oracle.num_hvps - before == oracle.block_size + 3
    one_by_one = np.stack([oracle.hvp(c) for c in block.T], axis=1)
    np.testing.assert_allclose(together, one_by_one, rtol=1e-10, atol=1e-12 * np.abs(one_by_one).max())


def test_xla_compiled_products_equal_plain_ones_with_a_short_last_micro_batch():
    model = build("mlp_regularized")
    x, y = data_for(model)
    size = len(x) // 2 + 1  # two micro-batches, the second shorter
    plain, xla = (eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=size, dtype="float64",
                                         jit_compile=jit) for jit in (False, True))
    block = np.random.default_rng(7).standard_normal((plain.dim, 3))
    np.testing.assert_allclose(xla.hvp_block(block), plain.hvp_block(block), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xla.hvp(block[:, 0]), plain.hvp(block[:, 0]), rtol=1e-10, atol=1e-12)
    assert xla.loss() == pytest.approx(plain.loss(), rel=1e-12)


class ScaledLayerNormalization(keras.layers.LayerNormalization):
    """A user's subclass of a stock normalisation layer."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


@pytest.mark.parametrize("layer, named", [
    (lambda: keras.layers.BatchNormalization(synchronized=True, name="sync_bn"), ("sync_bn", "synchronized=True")),
    (lambda: ScaledLayerNormalization(name="scaled_ln"), ("scaled_ln", "ScaledLayerNormalization",
                                                         "subclass of keras.layers.LayerNormalization")),
], ids=["synchronized-batchnorm", "layernorm-subclass"])
def test_normalisation_without_an_exact_twin_is_refused_not_silently_inexact(layer, named):
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), layer(), keras.layers.Dense(2)])
    x, y = np.random.default_rng(0).standard_normal((8, 4)).astype("float32"), np.arange(8) % 2
    with pytest.raises(TypeError) as err:
        eoskeras.HessianOracle(net, "cross_entropy", x, y)
    for name in named:
        assert name in str(err.value)


def test_operators_share_one_objective():
    _, _, _, oracle, reference = setup("mlp_regularized", "batch")
    objective = oracle.objective
    again = eoskeras.HessianOracle.of(objective)
    ggn = eoskeras.GaussNewtonOperator(objective)
    v = np.random.default_rng(8).standard_normal(oracle.dim)
    np.testing.assert_allclose(again.hvp(v), reference @ v, rtol=1e-6, atol=1e-8 * np.abs(reference @ v).max())
    assert ggn.objective is objective and again.describe() == oracle.describe()
    loss, gradient = objective.loss_and_gradient()
    assert loss == oracle.loss() and np.array_equal(gradient, oracle.loss_and_gradient()[1])
