"""The tracker's block iteration held in one graph call agrees with the
host-driven one and the dense Hessian, and steps aside where it cannot hold."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import eoskeras
from eoskeras.curvature import oracle as oracle_module
from tiny_models import build, data_for, finite_difference_hessian


def oracles(name: str, **options):
    model = build(name)
    x, y = data_for(model)
    options = {"micro_batch_size": len(x), **options}
    held, host = (eoskeras.HessianOracle(model, "cross_entropy", x, y, dtype="float64", **options) for _ in range(2))
    reference = finite_difference_hessian(model, "cross_entropy", x, y, training=True)
    return model, held, host, np.linalg.eigvalsh((reference + reference.T) / 2)[::-1]


def assert_same(held: eoskeras.Spectrum, host: eoskeras.Spectrum) -> None:
    assert held.num_hvps == host.num_hvps and held.converged == host.converged
    np.testing.assert_allclose(held.eigenvalues, host.eigenvalues, rtol=1e-11)
    np.testing.assert_allclose(held.residuals, host.residuals, rtol=1e-3, atol=1e-11 * host.scale)  # rounding
    assert np.all(eoskeras.vector_cosines(held.eigenvectors, host.eigenvectors) > 1 - 1e-9)


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_batchnorm"])
def test_held_tracker_matches_the_host_driven_one_and_the_dense_hessian(name):
    model, held, host, eigenvalues = oracles(name)
    trackers = {oracle: eoskeras.EigenTracker(k=3, tol=1e-8, seed=2) for oracle in (held, host)}
    trackers[host].hold = False
    for step in range(3):  # cold, then warm after training moved the weights
        a, b = trackers[held].update(held), trackers[host].update(host)
        assert held._held_track is not None and host._held_track is None
        assert a.method == b.method == ("block-krylov" if step == 0 else "block-krylov-warm")
        assert_same(a, b)
        assert a.converged and held.num_hvps == host.num_hvps
        if step == 0:
            np.testing.assert_allclose(a.eigenvalues, eigenvalues[:3], rtol=1e-6)
            assert np.all(a.residuals <= 1e-8 * a.scale)
        np.testing.assert_allclose(trackers[held].vectors, trackers[host].vectors * np.sign(
            np.sum(trackers[held].vectors * trackers[host].vectors, axis=0)), atol=1e-8)
        model.trainable_variables[0].assign(model.trainable_variables[0] * 0.98)
    assert held._held_track.experimental_get_tracing_count() == 1


def test_held_tracker_restarts_spends_its_budget_and_stops_when_invariant_as_the_host_one():
    _, held, host, eigenvalues = oracles("mlp_tanh")  # 51 weights
    # A basis of at most 8 rows: thick restarts, many of them.
    a = eoskeras.track_top_k(held, 3, tol=1e-9, max_basis=8, hold=True)
    b = eoskeras.track_top_k(host, 3, tol=1e-9, max_basis=8)
    assert_same(a, b)
    assert a.converged and a.num_hvps > 3 * 8
    np.testing.assert_allclose(a.eigenvalues, eigenvalues[:3], rtol=1e-6)
    # Out of HVPs before converging: not converged, the budget spent exactly.
    a = eoskeras.track_top_k(held, 3, tol=1e-12, max_hvps=7, hold=True)
    b = eoskeras.track_top_k(host, 3, tol=1e-12, max_hvps=7)
    assert_same(a, b)
    assert not a.converged and a.num_hvps == 7
    # A tolerance below rounding: the basis grows to the whole space, which is invariant, and
    # both stop there (they used to expand by rounding noise and restart until the budget ran
    # out, returning residuals larger than the eigenvalues).
    for hold in (True, False):
        a = eoskeras.track_top_k(held, 3, tol=1e-17, max_basis=held.dim, max_hvps=4 * held.dim, hold=hold)
        assert a.converged and a.num_hvps == held.dim and np.all(a.residuals <= 1e-13 * a.scale)
        np.testing.assert_allclose(a.eigenvalues, eigenvalues[:3], rtol=1e-6)
    assert held._held_track.experimental_get_tracing_count() == 1  # any k, budget and basis size


def test_nothing_is_held_where_it_cannot_be(monkeypatch):
    _, held, _, eigenvalues = oracles("mlp_tanh")
    start = np.eye(held.dim)[:3]
    _, forward, _, _ = oracles("mlp_tanh", hvp_mode="forward")
    assert forward.held_track(start, 3, 0, 1e-6, 50, 20) is None
    _, several, _, _ = oracles("mlp_tanh", micro_batch_size=10)  # 24 examples: three micro-batches
    assert several.held_track(start, 3, 0, 1e-6, 50, 20) is None
    # Room for a basis of 3 rows and their products, not 4.
    monkeypatch.setattr(oracle_module, "HELD_BASIS_BYTES", 7 * held.dim * 8)
    assert held.held_track(start, 3, 0, 1e-6, 50, 4) is None and held.held_track(start, 3, 0, 1e-6, 50, 3) is not None
    for oracle in (forward, several, held):  # the tracker then drives the products itself
        spectrum = eoskeras.EigenTracker(k=2, tol=1e-8, seed=0).update(oracle)
        assert spectrum.converged
        np.testing.assert_allclose(spectrum.eigenvalues, eigenvalues[:2], rtol=1e-6)


def test_the_monitor_holds_and_records_what_the_host_driven_tracker_does():
    # auto_k changes k between solves: the held graph takes it as an input and does not retrace.
    records = {}
    for hold in (True, False):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, activation="tanh"), keras.layers.Dense(3)])
        rng = np.random.default_rng(0)
        x, y = rng.standard_normal((128, 6)).astype("float32"), rng.integers(0, 3, 128)
        model = eoskeras.FullBatchModel(net)
        model.compile(optimizer=keras.optimizers.SGD(2.0))
        monitor = eoskeras.SharpnessMonitor(x, y, every=2, top_k=2, tol=1e-8, dtype="float64", auto_k=0.5)
        monitor.tracker.hold = hold
        model.fit_full_batch(x, y, steps=10, callbacks=[monitor])
        records[hold] = monitor.public_records()
        graph = monitor.oracle._held_track
        assert graph is None if not hold else graph.experimental_get_tracing_count() == 1
    held, host = records[True], records[False]
    assert len(held) == 6 and all(r["converged"] for r in held)
    assert held[0]["top_k"] > 2  # grown from 2 within the first measurement: the graph ran with several k
    for a, b in zip(held, host):
        assert a["eig_hvps"] == b["eig_hvps"] and a["top_k"] == b["top_k"]
        np.testing.assert_allclose(a["eigenvalues"], b["eigenvalues"], rtol=1e-10)


def test_a_preconditioned_operator_is_held_with_its_scaling():
    # Adam's P^-1/2 H P^-1/2 (nested once more, as scalings compose): held against host and dense.
    _, held, host, _ = oracles("mlp_tanh")
    first, second = np.linspace(1.0, 2.0, held.dim), np.linspace(3.0, 0.5, held.dim)
    ops = {oracle: eoskeras.PreconditionedOperator(eoskeras.PreconditionedOperator(oracle, first), second)
           for oracle in (held, host)}
    dense = np.stack([ops[host].matvec(e) for e in np.eye(host.dim)], axis=1)
    a = eoskeras.track_top_k(ops[held], 3, tol=1e-10, hold=True)
    b = eoskeras.track_top_k(ops[host], 3, tol=1e-10)
    assert held._held_track is not None and host._held_track is None
    assert_same(a, b)
    assert a.converged
    np.testing.assert_allclose(a.eigenvalues, np.linalg.eigvalsh((dense + dense.T) / 2)[::-1][:3], rtol=1e-9)


def test_held_orthonormalisation_drops_what_the_basis_or_other_rows_already_span():
    # The held graph's expansion step alone: rows in the basis's span, repeated rows and nearly
    # dependent ones (which need SVQB's second pass) leave exactly the new directions, orthonormal.
    import tensorflow as tf
    from eoskeras.curvature.held_tracker import _orthonormal_against

    rng = np.random.default_rng(0)
    n = 40
    basis = np.linalg.qr(rng.standard_normal((n, 6)))[0].T
    fresh = rng.standard_normal((3, n))
    nearly = fresh[0] + 1e-5 * rng.standard_normal(n)  # singular value ~1e-6 among the unit rows: a second pass
    w = np.vstack([fresh, basis[2] * 5.0, 2.0 * fresh[1], nearly, rng.standard_normal(6) @ basis])
    q = _orthonormal_against(tf.constant(w), tf.constant(basis), tf.constant(np.linalg.norm(w, axis=1))).numpy()
    assert q.shape == (4, n)  # the three fresh directions and the one `nearly` adds
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(q @ basis.T, 0.0, atol=1e-12)
    # The span: every row of w lies in span(basis) + span(q).
    both = np.vstack([basis, q])
    np.testing.assert_allclose(w - (w @ both.T) @ both, 0.0, atol=1e-9 * np.abs(w).max())


def test_eigenvalue_criterion_bounds_the_eigenvalues_error_held_and_from_the_host_alike():
    model, held, host, eigenvalues = oracles("mlp_tanh")
    tol = 1e-6
    by_residual = eoskeras.track_top_k(host, 3, tol=tol, seed=1)
    for step in range(2):  # cold, then warm after the weights moved
        trackers = [eoskeras.EigenTracker(3, tol=tol, seed=1, criterion="eigenvalue", hold=hold) for hold in (True, False)]
        if step:
            for tracker in trackers:
                tracker.update(held)
            model.trainable_variables[0].assign(model.trainable_variables[0] * 0.98)
            reference = finite_difference_hessian(model, "cross_entropy", *data_for(model), training=True)
            eigenvalues = np.linalg.eigvalsh((reference + reference.T) / 2)[::-1]
        a, b = trackers[0].update(held), trackers[1].update(host)
        assert_same(a, b)
        assert a.criterion == "eigenvalue" and a.converged
        # What tol bounds is the eigenvalues' error, which the dense Hessian confirms ...
        assert np.all(np.abs(a.eigenvalues - eigenvalues[:3]) <= tol * a.scale)
        # ... while the residuals, judged on the eigenvalue criterion, need not meet it.
        assert np.any(a.residuals > tol * a.scale)
        if step == 0:  # fewer products than the residual criterion from the same cold start
            assert a.num_hvps < by_residual.num_hvps
    with pytest.raises(ValueError, match="criterion: got 'gap'; allowed: residual, eigenvalue"):
        eoskeras.EigenTracker(3, criterion="gap")
