"""FullBatchModel's step, the optimisers and their stability thresholds."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import eoskeras
from eoskeras.training.optimizers import make_optimizer


def small_net(seed=0, inputs=8):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(3)])


def data(n=250, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype("float32"), rng.integers(0, 3, n)


def flat(variables):
    return np.concatenate([np.ravel(v.numpy() if hasattr(v, "numpy") else v) for v in variables])


def test_accumulated_gradient_equals_one_shot_full_batch():
    x, y = data()
    net = small_net()
    reference = eoskeras.FullBatchModel(net, physical_batch_size=len(x)).accumulate(tf.constant(x), tf.constant(y))
    for size in (7, 64, 100):  # ragged last micro-batches: 250 = 35*7 + 5, 3*64 + 58
        loss, acc, grads = eoskeras.FullBatchModel(net, physical_batch_size=size).accumulate(tf.constant(x), tf.constant(y))
        g, g_ref = flat(grads), flat(reference[2])
        assert np.linalg.norm(g - g_ref) <= 1e-6 * np.linalg.norm(g_ref)
        assert float(loss) == pytest.approx(float(reference[0]), rel=1e-6)
        assert float(acc) == pytest.approx(float(reference[1]), abs=1e-6)


def test_one_fit_step_is_exactly_gradient_descent():
    x, y = data()
    net = small_net()
    model = eoskeras.FullBatchModel(net, physical_batch_size=64)
    model.compile(optimizer=keras.optimizers.SGD(0.3))
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y)
    w0 = oracle.weights()
    loss0, g = oracle.loss_and_gradient()
    history = model.fit_full_batch(x, y, steps=1)
    np.testing.assert_allclose(oracle.weights(), w0 - 0.3 * g, rtol=1e-5, atol=1e-6)
    assert history.history["loss"][0] == pytest.approx(loss0, rel=1e-5)


def test_minibatch_sgd_uses_the_same_step():
    x, y = data(n=96)
    net = small_net()
    model = eoskeras.FullBatchModel(net, physical_batch_size=10)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    w0 = flat(net.get_weights())
    _, _, g_first = eoskeras.FullBatchModel(net, physical_batch_size=32).accumulate(tf.constant(x[:32]), tf.constant(y[:32]))
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, steps_per_epoch=1)
    np.testing.assert_allclose(flat(net.get_weights()), w0 - 0.1 * flat(g_first), rtol=1e-5, atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 1


def test_warmup_schedule_is_linear_then_constant():
    schedule = eoskeras.WarmupConstant(0.5, warmup_steps=2)
    assert [float(schedule(t)) for t in range(4)] == [0.25, 0.5, 0.5, 0.5]


# ------------------------------------------------------------------ thresholds
QUADRATIC_X = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
SHARPNESS = float(np.linalg.eigvalsh(QUADRATIC_X.T.astype(np.float64) @ QUADRATIC_X / 64)[-1])

# (name, optimizer options, constant preconditioner P that the options pin down)
OPTIMIZERS = [
    ("gd", {}, 1.0),
    ("momentum", {"momentum": 0.9}, 1.0),
    ("nesterov", {"momentum": 0.9}, 1.0),
    # epsilon dominates v: P = sqrt(v + eps) ~ 1e4 until |g| nears 1e4.
    ("rmsprop", {"epsilon": 1e8}, 1e4),
    # beta_2 = 0 removes the bias correction; P = |g| + eps ~ 1e5.
    ("adam", {"beta_2": 0.0, "epsilon": 1e5}, 1e5),
    # Capped above at c = 1e-3 while |g| >> c: P = c + eps exactly.
    ("clipped_rmsprop", {"clip_value": 1e-3, "clip_mode": "ub", "epsilon": 1e-12}, 1e-3),
    ("clipped_adam", {"clip_value": 1e-3, "clip_mode": "ub", "epsilon": 1e-12}, 1e-3),
]


BURN_IN = 60


def run_quadratic(name, options, factor, p, steps=300):
    """0.5 |Xw - y|^2 averaged: Hessian X^T X / n, sharpness known in closed form."""
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    target = QUADRATIC_X @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
    hyper = {k: v for k, v in options.items() if k in ("momentum",)}
    lr = factor * eoskeras.threshold_learning_rate(name, SHARPNESS / p, **hyper)
    if "adam" in name:
        # Adam's threshold is that of its steady state: bias correction makes
        # the first steps up to 1/(1 - beta_1) times larger. Let m settle at a
        # tiny step size first.
        lr = keras.optimizers.schedules.PiecewiseConstantDecay([BURN_IN], [lr * 1e-4, lr])
    model = eoskeras.FullBatchModel(net, loss="mse", physical_batch_size=64)
    model.compile(optimizer=make_optimizer(name, lr, **options))
    stop = eoskeras.StopConditions(train_accuracy=None, divergence_factor=1e4)
    steps += BURN_IN if "adam" in name else 0
    history = model.fit_full_batch(QUADRATIC_X, target, steps, callbacks=[stop])
    losses = np.array(history.history["loss"])
    return losses, stop, model


@pytest.mark.parametrize("name,options,p", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_threshold_separates_convergence_from_divergence(name, options, p):
    below, stop_below, _ = run_quadratic(name, options, 0.99, p)
    above, stop_above, _ = run_quadratic(name, options, 1.01, p)
    assert not stop_below.diverged and below[-1] < 1e-3 * below[0], below[[0, -1]]
    assert stop_above.diverged, (stop_above.reason, above[[0, -1]])
    assert "diverged" in stop_above.reason and stop_above.step < 300 + BURN_IN


def test_threshold_formulas_and_adaptive_preconditioners():
    _, _, model = run_quadratic("adam", {"beta_2": 0.0, "epsilon": 1e5}, 0.5, 1e5, steps=5)
    opt = model.optimizer
    lr = eoskeras.training.thresholds.current_learning_rate(opt)
    assert eoskeras.stability_threshold(opt) == pytest.approx((2 + 2 * 0.9) / ((1 - 0.9) * lr))
    p = eoskeras.preconditioner(opt, model.trainable_variables)
    assert np.all(np.abs(p - 1e5) < 50)  # |g| + eps
    sgd = keras.optimizers.SGD(0.1, momentum=0.5, nesterov=True)
    assert eoskeras.stability_threshold(sgd) == pytest.approx(3.0 / (0.1 * 2.0))
    assert eoskeras.preconditioner(sgd, model.trainable_variables) is None


def test_adam_preconditioner_matches_the_update_it_makes():
    """P from the slots reproduces Keras Adam's actual step: dw = -lr m_hat / P."""
    x, y = data(n=64)
    net = small_net()
    opt = keras.optimizers.Adam(1e-2)
    model = eoskeras.FullBatchModel(net, physical_batch_size=64)
    model.compile(optimizer=opt)
    model.fit_full_batch(x, y, steps=3)
    w_before = flat(net.get_weights())
    _, _, g = model.accumulate(tf.constant(x), tf.constant(y))
    model.fit_full_batch(x, y, steps=1)
    step_taken = flat(net.get_weights()) - w_before
    # After the step, the slots hold m_t, v_t of the step that was taken.
    p = eoskeras.preconditioner(opt, model.trainable_variables)
    m = flat([opt._momentums[opt._get_variable_index(v)] for v in model.trainable_variables])
    m_hat = m / (1 - 0.9**4)
    np.testing.assert_allclose(step_taken, -1e-2 * m_hat / p, rtol=2e-3, atol=1e-8)


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.Adam(1e-3, beta_2=0.9),
    lambda: keras.optimizers.RMSprop(1e-3, rho=0.9),
    lambda: eoskeras.training.optimizers.ClippedAdam(1e-3, beta_2=0.9, clip_value=0.5, clip_mode="ub"),
], ids=["adam", "rmsprop", "clipped_adam"])
def test_lr_rule_preconditioner_is_the_stationary_denominator_under_a_constant_gradient(make):
    # lr_relative's rule for adaptive optimisers: the denominator the optimiser settles to
    # when the gradient stays g0, not the first step's (for RMSProp sqrt(1 - rho) smaller).
    from eoskeras.training.thresholds import lr_rule_preconditioner
    g = np.random.default_rng(0).standard_normal(50) * np.logspace(-6, 0, 50)
    w = keras.Variable(np.zeros(50, dtype="float32"))
    opt = make()
    opt.build([w])
    first = eoskeras.preconditioner(opt, [w], g)
    for _ in range(300):
        opt.apply_gradients([(tf.constant(g, tf.float32), w)])
    settled = eoskeras.preconditioner(opt, [w])
    rule = lr_rule_preconditioner(opt, g)
    np.testing.assert_allclose(rule, settled, rtol=1e-4)
    if isinstance(opt, keras.optimizers.RMSprop):
        assert np.max(np.abs(first / settled - 1)) > 0.5
    assert lr_rule_preconditioner(keras.optimizers.SGD(0.1), g) is None
