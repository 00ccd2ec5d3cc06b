"""Eigen-solvers, trace and density on matrices with known spectra, and warm
starts on a real network's Hessian."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import eoskeras
from eoskeras import DenseOperator


def matrix_with_spectrum(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (q * np.asarray(eigenvalues, dtype=float)) @ q.T


def test_algebraically_largest_not_largest_magnitude():
    # A large negative eigenvalue must not be reported as the sharpness.
    lam = np.concatenate([[-100.0, -50.0], np.linspace(-1, 10, 58)])
    op = DenseOperator(matrix_with_spectrum(lam))
    spectrum = eoskeras.lanczos(op, k=3, tol=1e-10, smallest=True)
    np.testing.assert_allclose(spectrum.eigenvalues, np.sort(lam)[::-1][:3], rtol=1e-9)
    assert spectrum.smallest == pytest.approx(-100.0, rel=1e-9)
    block = eoskeras.track_top_k(DenseOperator(matrix_with_spectrum(lam)), 3, tol=1e-9)
    np.testing.assert_allclose(block.eigenvalues, np.sort(lam)[::-1][:3], rtol=1e-8)


def test_lanczos_counts_hvps_and_is_deterministic():
    h = matrix_with_spectrum(np.linspace(-2, 9, 80), seed=3)
    a, b = DenseOperator(h), DenseOperator(h)
    s1, s2 = eoskeras.lanczos(a, k=4, seed=7), eoskeras.lanczos(b, k=4, seed=7)
    assert s1.num_hvps == a.num_hvps == s2.num_hvps
    np.testing.assert_array_equal(s1.eigenvalues, s2.eigenvalues)
    np.testing.assert_array_equal(s1.eigenvectors, s2.eigenvectors)
    s3 = eoskeras.lanczos(DenseOperator(h), k=4, seed=8)
    assert not np.array_equal(s1.eigenvectors, s3.eigenvectors)  # the seed matters


def test_lanczos_stops_early_on_an_invariant_subspace():
    spectrum = eoskeras.lanczos(DenseOperator(np.diag([5.0, 3.0, 3.0, 1.0])), k=2, tol=1e-12)
    np.testing.assert_allclose(spectrum.eigenvalues, [5.0, 3.0])
    assert spectrum.num_hvps <= 4  # the whole space; the residuals come from its products
    assert spectrum.converged and np.all(spectrum.residuals < 1e-12)


def lanczos_cases():
    rng = np.random.default_rng(5)
    cluster = np.concatenate([[10.0, 10.0 - 1e-6, 10.0 - 2e-6], rng.uniform(-1.0, 5.0, 47)])
    return [
        ("diag-5331", np.diag([5.0, 3.0, 3.0, 1.0]), 3, [5.0, 3.0, 3.0]),
        ("triple-10", np.diag(np.concatenate([[10.0] * 3, np.linspace(-1, 5, 47)])), 3,
         [10.0, 10.0, 10.0]),
        ("double-top-of-5", matrix_with_spectrum(np.concatenate([[7.0, 7.0, 4.0, 4.0, 4.0], np.linspace(0, 3, 45)])),
         5, [7.0, 7.0, 4.0, 4.0, 4.0]),
        ("near-degenerate", matrix_with_spectrum(cluster, seed=2), 4, np.sort(cluster)[::-1][:4]),
    ]


@pytest.mark.parametrize("name, h, k, expected", lanczos_cases(), ids=[c[0] for c in lanczos_cases()])
def test_lanczos_finds_multiplicities_and_clusters(name, h, k, expected):
    # Single-vector Lanczos returned [5, 3, 1] and [10, 10, 5] here, converged.
    for seed in range(3):
        spectrum = eoskeras.lanczos(DenseOperator(h), k=k, tol=1e-10, seed=seed)
        assert spectrum.converged
        np.testing.assert_allclose(spectrum.eigenvalues, expected, rtol=1e-9)
        # The returned residuals are measured: ‖H v − θ v‖ of the returned vectors.
        measured = np.linalg.norm(h @ spectrum.eigenvectors - spectrum.eigenvectors * spectrum.eigenvalues, axis=0)
        np.testing.assert_allclose(spectrum.residuals, measured, rtol=1e-6, atol=1e-13)


class SkewedOperator(DenseOperator):
    """A matrix whose products carry a small non-symmetric error, as float32
    HVPs do: the Lanczos estimate then claims more than the vectors deliver."""

    def __init__(self, matrix, error):
        super().__init__(matrix)
        self.error = error

    def matvec(self, v):
        return super().matvec(v) + self.error @ v


def test_converged_is_judged_on_the_measured_residual():
    rng = np.random.default_rng(0)
    h = matrix_with_spectrum(np.linspace(-1, 10, 60))
    spectrum = eoskeras.lanczos(SkewedOperator(h, 1e-4 * rng.standard_normal((60, 60))), k=2, tol=1e-8)
    assert not spectrum.converged
    assert np.all(spectrum.relative_residuals > 1e-8)


def test_trace_estimators_on_known_matrix():
    lam = np.concatenate([[40.0, 25.0, 10.0], np.random.default_rng(0).uniform(-0.5, 1.0, 197)])
    h = matrix_with_spectrum(lam)
    plain = eoskeras.hutchinson_trace(DenseOperator(h), 90, seed=0)
    plus = eoskeras.hutchpp_trace(DenseOperator(h), 90, seed=0)
    for est in (plain, plus):
        assert abs(est.value - lam.sum()) <= 3 * est.stderr
    # Deflating the outliers is the point of Hutch++.
    assert plus.stderr < plain.stderr / 3


def test_density_quadrature_is_a_probability_and_gets_the_moments():
    lam = np.linspace(-1.0, 4.0, 300)
    density = eoskeras.spectral_density(DenseOperator(matrix_with_spectrum(lam)), num_vectors=30, steps=30, seed=0)
    np.testing.assert_allclose(density.weights.sum(axis=1), 1.0, rtol=1e-10)
    assert np.trapezoid(density.density, density.grid) == pytest.approx(1.0, abs=1e-3)
    assert density.moment(1) == pytest.approx(lam.mean(), abs=0.1)
    # Extreme Ritz values converge first, from inside the spectrum.
    assert -1.0 <= density.nodes.min() < -0.99
    assert 3.99 < density.nodes.max() <= 4.0
    assert density.num_hvps == 900


def test_similarity_measures():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((50, 3)))
    assert eoskeras.subspace_similarity(u, u) == pytest.approx(1.0)
    assert eoskeras.subspace_similarity(u, -u[:, ::-1]) == pytest.approx(1.0)  # sign/order free
    w = np.linalg.qr(np.hstack([u, rng.standard_normal((50, 3))]))[0][:, 3:]
    assert eoskeras.subspace_similarity(u, w) == pytest.approx(0.0, abs=1e-12)
    # One vector rotated by theta: cos(theta / sqrt(1)).
    theta = 0.3
    a, b = np.eye(50)[:, :1], (np.cos(theta) * np.eye(50)[:, 0] + np.sin(theta) * np.eye(50)[:, 1])[:, None]
    assert eoskeras.subspace_similarity(a, b) == pytest.approx(np.cos(theta))
    np.testing.assert_allclose(eoskeras.vector_cosines(a, -b), [np.cos(theta)])
    # Two of three directions rotated by pi/2: cos(sqrt(2 (pi/2)^2) / sqrt(3)).
    v = u.copy()
    v[:, 1:] = w[:, :2]
    assert eoskeras.subspace_similarity(u, v) == pytest.approx(np.cos(np.sqrt(2) * np.pi / 2 / np.sqrt(3)))


def test_principal_angles_match_qr_and_refuse_dependent_columns():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    sigma = np.linalg.svd(np.linalg.qr(a)[0].T @ np.linalg.qr(b)[0], compute_uv=False)
    np.testing.assert_allclose(eoskeras.principal_angles(a, b), np.arccos(sigma), rtol=1e-10)
    with pytest.raises(ValueError, match="linearly dependent"):
        eoskeras.subspace_similarity(np.c_[a[:, :2], a[:, 0]], b)


def test_principal_angles_of_orthonormal_columns_skip_their_r_factors_alike():
    rng = np.random.default_rng(4)
    u = np.linalg.qr(rng.standard_normal((60, 4)))[0]
    for step in (1e-7, 1e-3, 0.5):  # nearly the same subspace (angles from arccos near 1) to far apart
        v = np.linalg.qr(u + step * rng.standard_normal((60, 4)))[0]
        np.testing.assert_allclose(eoskeras.principal_angles(u, v, orthonormal=True), eoskeras.principal_angles(u, v),
                                   rtol=1e-7, atol=1e-9)
        assert eoskeras.subspace_similarity(u, v, orthonormal=True) == pytest.approx(eoskeras.subspace_similarity(u, v),
                                                                                      abs=1e-12)
    # Columns that are not orthonormal need the R factors: the shortcut would be wrong there.
    assert abs(eoskeras.subspace_similarity(u, 3 * v, orthonormal=True) - eoskeras.subspace_similarity(u, v)) > 0.1


def test_warm_start_needs_a_third_of_the_cold_hvps_after_a_small_step():
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(w, activation=a, dtype="float64") for w, a in ((32, "tanh"), (32, "tanh"), (3, None))]
    model = keras.Sequential([keras.Input((16,), dtype="float64"), *layers])  # 1,699 parameters
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((128, 16)), rng.integers(0, 3, 128)
    oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, dtype="float64")
    tol = 1e-3
    tracker = eoskeras.EigenTracker(k=3, tol=tol, seed=0)
    assert tracker.update(oracle).converged
    for v in model.trainable_variables:  # a small training-like step
        v.assign(v.numpy() * (1 + 1e-3 * rng.standard_normal(v.shape)))
    cold = eoskeras.lanczos(oracle, k=3, tol=tol, seed=0)
    warm = tracker.update(oracle)
    assert cold.converged and warm.converged and warm.method == "block-krylov-warm"
    assert warm.num_hvps * 3 <= cold.num_hvps, (warm.num_hvps, cold.num_hvps)
    np.testing.assert_allclose(warm.eigenvalues, cold.eigenvalues, rtol=1e-5)
    assert np.all(eoskeras.vector_cosines(warm.eigenvectors, cold.eigenvectors) > 0.999)


def test_tracker_carries_guard_ritz_vectors_to_the_next_warm_start():
    # Eigenvalues 10, 9.5, 9, then a cluster: the guard vectors are the 4th and 5th Ritz vectors.
    lam = np.r_[10.0, 9.5, 9.0, 8.9, 8.8, np.linspace(-1, 1, 95)]
    h = matrix_with_spectrum(lam)
    tracker = eoskeras.EigenTracker(k=3, tol=1e-8, seed=0, guard=2)
    spectrum = tracker.update(DenseOperator(h))
    assert spectrum.converged and spectrum.eigenvectors.shape == (100, 3) and tracker.vectors.shape == (100, 5)
    np.testing.assert_allclose(spectrum.eigenvalues, lam[:3], rtol=1e-12)
    np.testing.assert_array_equal(tracker.vectors[:, :3], spectrum.eigenvectors)
    np.testing.assert_allclose(tracker.vectors.T @ tracker.vectors, np.eye(5), atol=1e-12)
    # The guard vectors lie in the span of the next two eigenvectors only roughly (they
    # were never converged), but they are the Ritz vectors of the basis' next values.
    guard = tracker.vectors[:, 3:]
    assert np.all(np.diag(guard.T @ h @ guard) > 8.0)
    # Without guard vectors the warm start is the top k alone.
    plain = eoskeras.EigenTracker(k=3, tol=1e-8, seed=0, guard=0)
    plain.update(DenseOperator(h))
    assert plain.vectors.shape == (100, 3)


@pytest.mark.parametrize("name, lam", [
    ("power-law", 100.0 / np.arange(1, 201)),
    ("15-outliers", np.r_[[100.0] * 15, np.random.default_rng(1).uniform(-1, 1, 185)]),  # more than the sketch holds
])
def test_hutchpp_stderr_covers_the_whole_estimate(name, lam):
    # The sketch is random too: over many seeds the z-scores (estimate − tr H) / stderr
    # must be calibrated, not only the Hutchinson part's spread given one sketch.
    h = matrix_with_spectrum(lam)
    z = np.array([(e.value - lam.sum()) / e.stderr
                  for e in (eoskeras.hutchpp_trace(DenseOperator(h), 99, seed=s) for s in range(200))])
    assert 0.7 < np.mean(z**2) < 1.5, np.mean(z**2)
    assert np.mean(np.abs(z) < 3) >= 0.97


def test_eigenvalue_criterion_bounds_the_eigenvalue_error_in_fewer_hvps():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    lam = np.concatenate([[100.0, 80.0], rng.uniform(-5, 40, 298)])  # top gap 20, as a trained net's
    op = DenseOperator((q * lam) @ q.T)
    residual = eoskeras.lanczos(op, k=1, tol=1e-4, seed=0)
    eigenvalue = eoskeras.lanczos(op, k=1, tol=1e-4, seed=0, criterion="eigenvalue")
    assert residual.converged and eigenvalue.converged and eigenvalue.criterion == "eigenvalue"
    assert abs(eigenvalue.lambda_max - 100.0) <= 1e-4 * 100.0
    assert eigenvalue.num_hvps < residual.num_hvps
    # The bound r²/gap holds with the measured residual and the true gap.
    assert abs(eigenvalue.lambda_max - 100.0) <= eigenvalue.residuals[0] ** 2 / 20.0 + 1e-12
    assert eigenvalue.record()["criterion"] == "eigenvalue"
    with pytest.raises(ValueError, match="criterion: got 'exact'; allowed: residual, eigenvalue"):
        eoskeras.lanczos(op, k=1, criterion="exact")


def test_tracker_stops_once_its_basis_spans_the_space():
    # A tolerance below rounding: once the basis holds every direction the Ritz pairs are
    # exact and a residual is rounding alone. Expanding by it (normalised noise) used to
    # spoil the basis until the budget ran out, with residuals larger than the eigenvalues.
    lam = np.linspace(-1.0, 4.0, 30)
    spectrum = eoskeras.track_top_k(DenseOperator(matrix_with_spectrum(lam)), 3, tol=1e-17, max_basis=30,
                                    max_hvps=120)
    assert spectrum.converged and spectrum.num_hvps == 30
    assert np.all(spectrum.residuals <= 1e-13 * spectrum.scale)
    np.testing.assert_allclose(spectrum.eigenvalues, lam[::-1][:3], rtol=1e-12)
