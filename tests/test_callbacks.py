"""The callbacks inside ordinary Keras training loops."""
from __future__ import annotations

import csv

import keras
import numpy as np
import tensorflow as tf
import pytest

import eoskeras


def problem(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype("float32")
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, activation="tanh"), keras.layers.Dense(3)])
    return net, x, y


def test_sharpness_monitor_in_a_plain_keras_fit(tmp_path):
    net, x, y = problem()
    net.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = eoskeras.SharpnessMonitor(x, y, every=4, top_k=3, tol=1e-4)
    log = tmp_path / "log.csv"
    history = net.fit(x, y, batch_size=len(x), epochs=8, verbose=0, shuffle=False,
                      callbacks=[monitor, keras.callbacks.CSVLogger(str(log))])
    assert [r["step"] for r in monitor.records] == [0, 4, 8]
    # Every epoch's logs carry the latest measurement, so History and CSVLogger agree.
    # Epoch i ends after step i + 1.
    assert history.history["curvature_step"] == [0, 0, 0, 4, 4, 4, 4, 8]
    rows = list(csv.DictReader(log.open()))
    assert float(rows[-1]["lambda_max"]) == pytest.approx(monitor.records[-1]["lambda_max"])
    # The recorded sharpness is the Hessian's at that step, checked against a fresh solve.
    check = eoskeras.lanczos(eoskeras.HessianOracle(net, net.loss, x, y), k=3, tol=1e-8)
    np.testing.assert_allclose(monitor.records[-1]["eigenvalues"], check.eigenvalues, rtol=1e-3)
    last = monitor.records[-1]
    assert last["threshold"] == pytest.approx(2 / 0.5)
    assert last["sharpness_ratio"] == pytest.approx(last["lambda_max"] / 4.0)
    assert monitor.records[0]["similarity_first"] == pytest.approx(1.0)
    assert 0.0 <= last["similarity_first"] <= 1.0 and 0.0 <= last["similarity_prev"] <= 1.0
    # Warm starts: later measurements use fewer HVPs than the cold first one.
    assert all(r["eig_hvps"] < monitor.records[0]["eig_hvps"] for r in monitor.records[1:])


def test_sharpness_monitor_without_carrying_logs_only_where_measured():
    # What TensorBoard would write: each epoch's logs, one point per measurement.
    net, x, y = problem()
    net.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = eoskeras.SharpnessMonitor(x, y, every=4, top_k=2, tol=1e-4, carry_forward=False)
    history = net.fit(x, y, batch_size=len(x), epochs=8, verbose=0, shuffle=False, callbacks=[monitor])
    # Epoch 0 carries the measurement before step 1; epochs 3 and 7 end at steps 4 and 8.
    assert history.history["curvature_step"] == [0, 4, 8]
    assert history.history["lambda_max"] == pytest.approx([r["lambda_max"] for r in monitor.records])


def test_monitor_reports_preconditioned_sharpness_for_adam():
    net, x, y = problem()
    model = eoskeras.FullBatchModel(net)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    monitor = eoskeras.SharpnessMonitor(x, y, every=3, top_k=1, tol=1e-6)
    model.fit_full_batch(x, y, steps=3, callbacks=[monitor])
    last = monitor.records[-1]
    assert last["preconditioned"] and last["threshold"] == pytest.approx(38 / 1e-2)
    p = eoskeras.preconditioner(model.optimizer, net.trainable_variables)
    op = eoskeras.PreconditionedOperator(eoskeras.HessianOracle(net, "cross_entropy", x, y), p)
    assert last["lambda_max"] == pytest.approx(eoskeras.lanczos(op, k=1, tol=1e-8).lambda_max, rel=1e-4)


def test_divergence_is_a_recorded_result_not_a_crash():
    net, x, y = problem()
    model = eoskeras.FullBatchModel(net, loss="mse")
    model.compile(optimizer=keras.optimizers.SGD(50.0))
    stop = eoskeras.StopConditions(divergence_factor=100)
    monitor = eoskeras.SharpnessMonitor(x, y, every=1, top_k=1)
    flatness = eoskeras.FlatnessReport(x, y)
    history = model.fit_full_batch(x, y, steps=200, callbacks=[monitor, stop, flatness])
    assert stop.diverged and stop.reason.startswith("diverged")
    assert stop.step == len(history.history["loss"]) < 200
    assert flatness.result is None or np.isfinite(flatness.result["lambda_max"])


def test_stops_on_the_accuracy_goal_after_patience_steps():
    net, x, y = problem()
    model = eoskeras.FullBatchModel(net)
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    stop = eoskeras.StopConditions(train_accuracy=0.9, patience=3, divergence_factor=None)
    history = model.fit_full_batch(x, y, steps=500, callbacks=[stop])
    acc = history.history["accuracy"]
    assert stop.reason.startswith("train accuracy >= 0.9 for 3") and not stop.diverged and stop.outcome == "goal"
    assert all(a >= 0.9 for a in acc[-3:]) and len(acc) < 500
    assert not all(a >= 0.9 for a in acc[-4:]) or len(acc) == 3


def test_a_run_that_never_learns_is_stalled_and_one_out_of_steps_says_so():
    """The paper's abort rule (mean train accuracy < 0.11 over 100 steps), apart from running out of steps."""
    net, x, y = problem()
    model = eoskeras.FullBatchModel(net)
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # never learns: accuracy stays at its start
    start = float(model.accumulate(tf.constant(x), tf.constant(y), gradients=False)[1])
    stalled = eoskeras.StopConditions(train_accuracy=0.999, stall_accuracy=start + 0.01, stall_window=5,
                                      divergence_factor=None)
    history = model.fit_full_batch(x, y, steps=50, callbacks=[stalled])
    assert stalled.outcome == "stalled" and not stalled.diverged and len(history.history["loss"]) == 5
    assert stalled.reason.startswith("stalled: mean train accuracy over 5 epochs")
    never = eoskeras.StopConditions(train_accuracy=0.999, stall_accuracy=start - 0.01, stall_window=5,
                                    max_steps=8, divergence_factor=None)
    model.fit_full_batch(x, y, steps=50, callbacks=[never])
    assert never.outcome == "max_steps" and never.reason == "reached max_steps=8"


def test_flatness_report_against_its_definitions():
    net, x, y = problem()
    model = eoskeras.FullBatchModel(net)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    report = eoskeras.FlatnessReport(x, y, x[:40], y[:40], top_k=3, rho=1e-3, noise_sigma=1e-3, noise_samples=64,
                                     density_steps=20, dtype="float64")
    model.fit_full_batch(x, y, steps=5, callbacks=[report])
    r = report.result
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    dense = np.stack([oracle.hvp(e) for e in np.eye(oracle.dim)], axis=1)
    eig = np.linalg.eigvalsh(dense)[::-1]
    np.testing.assert_allclose(r["eigenvalues"], eig[:3], rtol=1e-6)
    assert abs(r["trace"] - np.trace(dense)) <= 3 * r["trace_stderr"] + 1e-9
    _, g = oracle.loss_and_gradient()
    # rho-sharpness to second order: rho |g| + rho^2/2 g^T H g / |g|^2.
    expected = 1e-3 * np.linalg.norm(g) + 0.5e-6 * g @ dense @ g / (g @ g)
    assert r["rho_sharpness"] == pytest.approx(expected, rel=1e-3)
    # Gaussian noise: sigma^2/2 tr(H) to leading order.
    assert abs(r["noise_sharpness"] - 0.5e-6 * np.trace(dense)) <= 3 * r["noise_sharpness_stderr"] + 1e-9
    assert r["accuracy_gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
    assert r["hessian"]["dtype"] == "float64" and report.density is not None
    assert r["threshold"] == pytest.approx(4.0)
    ggn = eoskeras.GaussNewtonOperator(oracle)
    ggn_top = np.linalg.eigvalsh(np.stack([ggn.matvec(e) for e in np.eye(oracle.dim)], axis=1))[-1]
    assert r["ggn_lambda_max"] == pytest.approx(ggn_top, rel=1e-4)
    assert r["ggn_hessian_ratio"] == pytest.approx(ggn_top / eig[0], rel=1e-4)


def test_monitor_records_per_layer_sharpness_every_measurement():
    net, x, y = problem()
    net.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = eoskeras.SharpnessMonitor(x, y, every=2, top_k=1, tol=1e-6, dtype="float64", layers=".")
    history = net.fit(x, y, batch_size=len(x), epochs=2, verbose=0, shuffle=False, callbacks=[monitor])
    names = [layer.name for layer in net.layers]
    assert [sorted(r["layer_lambda_max"]) for r in monitor.records] == [sorted(names)] * 2
    # The block's λ_max is the top eigenvalue of the dense Hessian's diagonal block.
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    dense = np.stack([oracle.hvp(e) for e in np.eye(oracle.dim)], axis=1)
    for name, indices in eoskeras.parameter_blocks(net).items():
        block = dense[np.ix_(indices, indices)]
        assert monitor.records[-1]["layer_lambda_max"][name] == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-5)
        assert history.history[f"lambda_max/{name}"][-1] == monitor.records[-1]["layer_lambda_max"][name]


def test_auto_k_tracks_every_eigenvalue_above_c_times_the_threshold():
    net, x, y = problem()
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    initial = np.linalg.eigvalsh(np.stack([oracle.hvp(e) for e in np.eye(oracle.dim)], axis=1))[::-1]
    lr = 2 / initial[5]  # about six eigenvalues above 0.9 x 2/lr at the start
    net.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    monitor = eoskeras.SharpnessMonitor(x, y, every=2, top_k=2, tol=1e-8, dtype="float64", auto_k=0.9)
    history = net.fit(x, y, batch_size=len(x), epochs=2, verbose=0, shuffle=False, callbacks=[monitor])
    dense = np.stack([oracle.hvp(e) for e in np.eye(oracle.dim)], axis=1)
    exact = np.linalg.eigvalsh(dense)[::-1]
    last, level = monitor.records[-1], 0.9 * 2 / lr
    assert monitor.records[0]["num_above"] == int(np.sum(initial >= level)) >= 5
    assert last["num_above"] == int(np.sum(exact >= level))
    # Every eigenvalue above the level is tracked, and one below it shows where the tracked set ends.
    assert last["top_k"] > last["num_above"] and last["eigenvalues"][-1] < level
    np.testing.assert_allclose(last["eigenvalues"], exact[:last["top_k"]], rtol=1e-6)
    assert history.history["num_above"][-1] == last["num_above"] and "lambda_3" not in history.history
    with pytest.raises(ValueError, match="auto_k: got 0"):
        eoskeras.SharpnessMonitor(x, y, auto_k=0)


def test_flatness_ratio_of_adam_divides_the_preconditioned_sharpness():
    # The plain λ_max over Adam's threshold (which applies to P⁻¹H) was reported before.
    net, x, y = problem()
    model = eoskeras.FullBatchModel(net)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    report = eoskeras.FlatnessReport(x, y, top_k=2, dtype="float64", trace_hvps=9, noise_samples=2)
    model.fit_full_batch(x, y, steps=3, callbacks=[report])
    r = report.result
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, dtype="float64")
    dense = np.stack([oracle.hvp(e) for e in np.eye(oracle.dim)], axis=1)
    scale = eoskeras.preconditioner(model.optimizer, net.trainable_variables) ** -0.5
    preconditioned = np.linalg.eigvalsh(scale[:, None] * dense * scale[None, :])[-1]
    assert r["preconditioned"] and r["preconditioned_lambda_max"] == pytest.approx(preconditioned, rel=1e-6)
    assert r["sharpness_ratio"] == pytest.approx(preconditioned / r["threshold"], rel=1e-6)
    assert r["lambda_max"] == pytest.approx(np.linalg.eigvalsh(dense)[-1], rel=1e-6)  # the rest stays plain


def test_metrics_rows_say_which_weights_their_loss_belongs_to(tmp_path):
    # FullBatchModel.train_step returns the loss *before* its update, while the row's
    # curvature and test metrics are measured after it: each row labels its loss's weights.
    import json

    from eoskeras.runs import layout
    from eoskeras.runs.checkpoint import Checkpointer
    from eoskeras.runs.recorder import RunRecorder

    net, x, y = problem(n=64)
    model = eoskeras.FullBatchModel(net, physical_batch_size=64)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.optimizer.build(net.trainable_variables)
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y)
    weights = []  # w_s after s updates
    keep = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: weights.append(oracle.weights()),
                                          on_epoch_end=lambda epoch, logs: weights.append(oracle.weights()))
    monitor = eoskeras.SharpnessMonitor(x, y, every=2, top_k=1, tol=1e-6, oracle=oracle)
    stop = eoskeras.StopConditions(divergence_factor=None)
    recorder = RunRecorder(tmp_path, Checkpointer(tmp_path, net, model.optimizer, monitor, stop), monitor)
    model.fit_full_batch(x, y, steps=4, callbacks=[keep, monitor, recorder])
    rows = [json.loads(line) for line in (tmp_path / layout.METRICS_JSONL).read_text().splitlines()]
    assert [(r["step"], r["loss_step"]) for r in rows] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    for row in rows:
        assert row["loss"] == pytest.approx(oracle.loss(weights[row["loss_step"]]), rel=1e-5)
        assert row["loss"] != pytest.approx(oracle.loss(weights[row["step"]]), rel=1e-5)
    (measured,) = [r for r in rows if r["step"] == 2 and "lambda_max" in r]
    # ... and the curvature of row 2 is at w_2, not at w_1 like its loss:
    at_w2 = np.stack([oracle.hvp(e, at=weights[2]) for e in np.eye(oracle.dim)], axis=1)
    assert measured["lambda_max"] == pytest.approx(np.linalg.eigvalsh((at_w2 + at_w2.T) / 2)[-1], rel=1e-4)
