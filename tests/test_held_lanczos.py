"""Lanczos that holds the linearisation in one graph call agrees with the
host-driven solver and the dense Hessian, and steps aside where it cannot hold."""
from __future__ import annotations

import numpy as np
import pytest

import eoskeras
from eoskeras.curvature import oracle as oracle_module
from eoskeras.curvature.lanczos import lanczos_iteration
from tiny_models import build, data_for, finite_difference_hessian


def oracles(name: str, **options):
    model = build(name)
    x, y = data_for(model)
    held, host = (eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=len(x), dtype="float64",
                                         **options) for _ in range(2))
    reference = finite_difference_hessian(model, "cross_entropy", x, y, training=True)
    return held, host, np.linalg.eigvalsh((reference + reference.T) / 2)


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_batchnorm"])
@pytest.mark.parametrize("criterion", ["residual", "eigenvalue"])
def test_held_lanczos_matches_the_host_solver_and_the_dense_hessian(name, criterion):
    held, host, eigenvalues = oracles(name)
    a = eoskeras.lanczos(held, k=1, tol=1e-8, seed=3, criterion=criterion)
    b = eoskeras.lanczos(host, k=1, tol=1e-8, seed=3, criterion=criterion, hold=False)
    assert held._held_lanczos is None and host._held_lanczos is None  # a fresh oracle: eager, no graph
    again = eoskeras.lanczos(held, k=1, tol=1e-8, seed=3, criterion=criterion)  # its second solve: the graph
    assert held._held_lanczos is not None and again.num_hvps == a.num_hvps
    assert again.lambda_max == pytest.approx(a.lambda_max, rel=1e-12)
    assert np.all(eoskeras.vector_cosines(a.eigenvectors, again.eigenvectors) > 1 - 1e-9)
    assert a.converged and b.converged and a.num_hvps == b.num_hvps == held.num_hvps / 2 == host.num_hvps
    assert abs(a.lambda_max - eigenvalues[-1]) <= 1e-6 * abs(eigenvalues[-1])
    assert a.lambda_max == pytest.approx(b.lambda_max, rel=1e-12)
    assert np.all(eoskeras.vector_cosines(a.eigenvectors, b.eigenvectors) > 1 - 1e-9)


def test_held_spectral_density_equals_the_host_one_and_traces_once():
    held, host, _ = oracles("mlp_tanh")
    a, b = eoskeras.spectral_density(held, 2, 12, seed=1), eoskeras.spectral_density(host, 2, 12, seed=1, hold=False)
    assert host._held_lanczos is None
    np.testing.assert_allclose(a.nodes, b.nodes, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-8, atol=1e-12)
    assert a.num_hvps == b.num_hvps == 24
    # Other step counts, tolerances and criteria reuse the one trace.
    eoskeras.lanczos(held, k=1, tol=1e-3, criterion="eigenvalue")
    eoskeras.lanczos(held, k=1, tol=1e-6, max_hvps=7)
    assert held._held_lanczos.experimental_get_tracing_count() == 1


def test_nothing_is_held_where_it_cannot_be(monkeypatch):
    held, _, eigenvalues = oracles("mlp_tanh")
    q0 = np.ones(held.dim)
    forward, _, _ = oracles("mlp_tanh", hvp_mode="forward")
    assert forward.held_lanczos(q0, 5) is None
    # Room for 3 steps: a basis of 4 rows and 3 products.
    monkeypatch.setattr(oracle_module, "HELD_BASIS_BYTES", 7 * held.dim * 8)
    assert held.held_lanczos(q0, 4) is None and held.held_lanczos(q0, 3) is not None
    # Adam's preconditioned operator has no held form: the host solver serves it, exactly.
    diagonal = np.linspace(1.0, 2.0, held.dim)
    preconditioned = eoskeras.PreconditionedOperator(held, diagonal)
    dense = np.stack([preconditioned.matvec(e) for e in np.eye(held.dim)], axis=1)
    spectrum = eoskeras.lanczos(preconditioned, k=1, tol=1e-10)
    assert spectrum.lambda_max == pytest.approx(np.linalg.eigvalsh((dense + dense.T) / 2)[-1], rel=1e-9)


def test_a_subset_start_solves_the_subsets_hessian_then_all_the_data():
    model = build("mlp_tanh")
    x, y = data_for(model, n=48)
    oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=len(x), dtype="float64")
    full = finite_difference_hessian(model, "cross_entropy", x, y, training=True)
    top = np.linalg.eigvalsh((full + full.T) / 2)[-1]
    # The subset's solve is the Hessian of 12 examples drawn with the seed, in the same graph.
    chosen = np.sort(np.random.default_rng(5).choice(len(x), 12, replace=False))
    part = finite_difference_hessian(model, "cross_entropy", x[chosen], y[chosen], training=True)
    first = oracle.held_lanczos(np.ones(oracle.dim), oracle.dim, 1e-10, subset=12, seed=5)
    alphas, betas = first.alphas, first.betas
    theta = np.linalg.eigvalsh(np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1))
    assert theta[-1] == pytest.approx(np.linalg.eigvalsh((part + part.T) / 2)[-1], rel=1e-6)
    # A few loose steps (a subset start's) without re-orthogonalisation: the same recurrence.
    loose, kept = (oracle.held_lanczos(np.ones(oracle.dim), 6, subset=12, seed=5, reorthogonalise=r)
                   for r in (False, True))
    np.testing.assert_allclose(loose.alphas, kept.alphas, rtol=1e-9)
    np.testing.assert_allclose(loose.ritz, kept.ritz, atol=1e-9)
    assert oracle.num_hvps == 0  # another operator's products
    # A fresh oracle's first solve (eager, subset and all) and its second (the graph) agree.
    fresh = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=len(x), dtype="float64")
    eager, graph = (eoskeras.lanczos(fresh, k=1, tol=1e-8, seed=5, start_examples=12) for _ in range(2))
    assert fresh._held_lanczos is not None and fresh.num_hvps == 2 * eager.num_hvps
    assert (eager.num_hvps, eager.info["start_hvps"]) == (graph.num_hvps, graph.info["start_hvps"])
    assert eager.lambda_max == pytest.approx(graph.lambda_max, rel=1e-12)
    for criterion in ("residual", "eigenvalue"):
        before = oracle.num_hvps
        spectrum = eoskeras.lanczos(oracle, k=1, tol=1e-8, seed=5, criterion=criterion, start_examples=12)
        assert spectrum.converged and spectrum.info["start_examples"] == 12 and spectrum.info["start_hvps"] > 0
        assert spectrum.num_hvps == oracle.num_hvps - before  # the full data's products only
        assert abs(spectrum.lambda_max - top) <= 1e-6 * abs(top)
    assert oracle._held_lanczos.experimental_get_tracing_count() == 1  # subset and full data: one trace


def test_lanczos_iteration_keeps_its_products_and_can_run_the_plain_recurrence():
    # What a fresh oracle's eager solve runs (held_top), as the held graph does.
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 60))
    matrix, q0 = (a + a.T) / 2, rng.standard_normal(60)
    products = np.empty((40, 60))
    alphas, _, basis, _ = lanczos_iteration(eoskeras.DenseOperator(matrix), q0, 40, products=products)
    np.testing.assert_allclose(products[:len(alphas)], basis @ matrix, atol=1e-13)
    assert np.abs(basis @ basis.T - np.eye(len(basis))).max() < 1e-13
    loose, _, loose_basis, _ = lanczos_iteration(eoskeras.DenseOperator(matrix), q0, 40, reorthogonalise=False)
    q, plain, beta = [np.zeros(60), q0 / np.linalg.norm(q0)], [], 0.0  # the three-term recurrence by hand
    for _ in range(len(loose)):
        w = matrix @ q[-1]
        plain.append(q[-1] @ w)
        w -= plain[-1] * q[-1] + beta * q[-2]
        beta = np.linalg.norm(w)
        q.append(w / beta)
    np.testing.assert_allclose(loose, plain, atol=1e-11)
    # Without re-orthogonalising, converged Ritz values cost the basis its orthogonality.
    assert np.abs(loose_basis @ loose_basis.T - np.eye(len(loose_basis))).max() > 1e-9


def test_the_second_eigenvalue_caps_the_gap_the_eigenvalue_criterion_divides_by():
    theta, residuals = np.array([10.0, 2.0]), np.array([1.0])
    assert eoskeras.curvature.lanczos.error_bounds(theta, [0], residuals, "eigenvalue")[0] == pytest.approx(1 / 8)
    assert eoskeras.curvature.lanczos.error_bounds(theta, [0], residuals, "eigenvalue", 9.0)[0] == pytest.approx(1.0)
    assert eoskeras.curvature.lanczos.error_bounds(theta, [0], residuals, "eigenvalue", 11.0)[0] == pytest.approx(1 / 8)
    assert eoskeras.curvature.lanczos.error_bounds(theta, [0], residuals, "residual", 9.0)[0] == 1.0
    # The held graph takes the same cap: told that a second eigenvalue lies just below
    # the Ritz value it stopped at, it goes on.
    held, _, _ = oracles("mlp_tanh")
    q0 = np.random.default_rng(0).standard_normal(held.dim)
    free = held.held_lanczos(q0, held.dim, 1e-1, "eigenvalue")
    top = eoskeras.curvature.lanczos.tridiagonal_eigh(free.alphas, free.betas)[0][-1]
    capped = held.held_lanczos(q0, held.dim, 1e-1, "eigenvalue", second=top * (1 - 1e-3))
    assert len(capped.alphas) > len(free.alphas), (len(capped.alphas), len(free.alphas))


@pytest.mark.parametrize("options, message", [
    ({"k": 2}, "k=1"), ({"hold": False}, "hold=True"), ({"smallest": True}, "smallest"),
    ({"start_examples": 24}, "1 <= start_examples < 24"),
])
def test_a_subset_start_refuses_what_it_cannot_do(options, message):
    held, _, _ = oracles("mlp_tanh")
    with pytest.raises(ValueError, match=message):
        eoskeras.lanczos(held, **{"k": 1, "start_examples": 6, **options})


def test_a_subset_start_needs_an_oracle_that_holds():
    forward, _, _ = oracles("mlp_tanh", hvp_mode="forward")
    with pytest.raises(ValueError, match="one micro-batch, reverse mode"):
        eoskeras.lanczos(forward, k=1, start_examples=6)
