"""GGN and empirical Fisher against dense float64 matrices built from the
stock model's Jacobians (first derivatives only: exact in Keras)."""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import eoskeras
from eoskeras.losses import get_loss
from tiny_models import D, build, data_for, dense_from_hvps, finite_difference_hessian


def _flat(parts) -> np.ndarray:
    return np.concatenate([np.reshape(p.numpy(), (p.shape[0], -1)) for p in parts], axis=1)


def dense_references(model, loss, x, y, micro_batch_size):
    """(GGN, empirical Fisher) as dense matrices: per micro-batch, the
    outputs' Jacobian J and the per-example losses' Jacobian G, then
    Σ_b (B/N) [Jᵀ H_L J / ... ] summed, plus the regulariser's Hessian."""
    loss_fn = get_loss(loss)
    weights = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    dim = sum(int(np.prod(v.shape)) for v in weights)
    ggn, fisher, n = np.zeros((dim, dim)), np.zeros((dim, dim)), len(x)
    for i in range(0, n, micro_batch_size):
        xc, yc = tf.constant(x[i:i + micro_batch_size]), tf.constant(y[i:i + micro_batch_size])
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(weights)
            out, _, _ = model.stateless_call(weights, non_trainable, xc, training=True, return_losses=True)
            losses = loss_fn(yc, out)
            flat_out = tf.reshape(out, [-1])
        jac = _flat(tape.jacobian(flat_out, weights))                  # (B·C, dim)
        per_example = _flat(tape.jacobian(losses, weights))            # (B, dim)
        z = tf.Variable(out)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                mean = tf.reduce_mean(loss_fn(yc, z))
            g = tf.reshape(inner.gradient(mean, z), [-1])
        h_out = np.reshape(outer.jacobian(g, z).numpy(), (g.shape[0], -1))  # (B·C, B·C)
        b = len(xc)
        ggn += b / n * jac.T @ h_out @ jac
        fisher += b / n * per_example.T @ per_example / b
    # The regularisers' Hessian (L2 here), by differentiating their gradient.
    with tf.GradientTape() as outer:
        outer.watch(weights)
        with tf.GradientTape() as inner:
            inner.watch(weights)
            _, _, reg = model.stateless_call(weights, non_trainable, tf.constant(x[:1]), training=True,
                                             return_losses=True)
            total = tf.add_n([tf.constant(0.0, D), *reg])
        grad = inner.gradient(total, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad = tf.concat([tf.reshape(g, [-1]) for g in grad], 0)
    if reg:
        parts = outer.jacobian(grad, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        ggn += np.concatenate([np.reshape(j.numpy(), (dim, -1)) for j in parts], axis=1)
    return ggn, fisher


CASES = [("mlp_tanh", "cross_entropy", 24), ("mlp_regularized", "mse", 24), ("cnn_batchnorm", "cross_entropy", 8)]


@functools.lru_cache(maxsize=None)
def setup(name, loss, micro_batch_size):
    model = build(name)
    x, y = data_for(model)
    if loss == "mse":
        y = np.eye(3)[y]
    oracle = eoskeras.HessianOracle(model, loss, x, y, micro_batch_size=micro_batch_size, dtype="float64")
    return model, x, y, oracle, dense_references(model, loss, x, y, micro_batch_size)


def dense_of(op) -> np.ndarray:
    return np.stack([op.matvec(e) for e in np.eye(op.dim)], axis=1)


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("name,loss,mb", CASES)
@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_products_match_dense_references(name, loss, mb, kind):
    _, _, _, oracle, (ggn, fisher) = setup(name, loss, mb)
    dense = dense_of(eoskeras.GaussNewtonOperator(oracle, kind))
    assert rel(dense, ggn if kind == "ggn" else fisher) < 1e-10
    assert rel(dense, dense.T) < 1e-10


@pytest.mark.parametrize("name,loss,mb", CASES)
def test_ggn_is_positive_semidefinite_while_the_hessian_is_not(name, loss, mb):
    _, _, _, oracle, _ = setup(name, loss, mb)
    ggn = np.linalg.eigvalsh(dense_of(eoskeras.GaussNewtonOperator(oracle)))
    assert ggn.min() >= -1e-12 * ggn.max()
    if name == "mlp_tanh":  # the full Hessian of a tanh net has negative curvature
        assert np.linalg.eigvalsh(dense_from_hvps(oracle)).min() < -1e-6


def test_ggn_equals_hessian_for_a_model_linear_in_its_weights():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), dtype=D), keras.layers.Dense(3, dtype=D)])
    x, y = data_for(model)
    oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, dtype="float64")
    reference = finite_difference_hessian(model, "cross_entropy", x, y)
    assert rel(dense_of(eoskeras.GaussNewtonOperator(oracle)), (reference + reference.T) / 2) < 1e-7


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_top_k_and_trace_through_the_solvers(kind):
    _, _, _, oracle, (ggn, fisher) = setup("mlp_tanh", "cross_entropy", 24)
    exact = ggn if kind == "ggn" else fisher
    op = eoskeras.GaussNewtonOperator(oracle, kind)
    spectrum = eoskeras.lanczos(op, k=3, tol=1e-8, seed=0)
    np.testing.assert_allclose(spectrum.eigenvalues, np.linalg.eigvalsh(exact)[::-1][:3], rtol=1e-6)
    assert spectrum.info["operator"] == kind
    trace = eoskeras.hutchpp_trace(op, 60, seed=0)
    assert abs(trace.value - np.trace(exact)) <= 3 * trace.stderr + 1e-9 * abs(np.trace(exact))


def test_bad_kind_is_named():
    _, _, _, oracle, _ = setup("mlp_tanh", "cross_entropy", 24)
    with pytest.raises(ValueError, match="kind: got 'hessian'; allowed: ggn, fisher"):
        eoskeras.GaussNewtonOperator(oracle, "hessian")
