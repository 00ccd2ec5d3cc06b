"""Warm-startable block eigensolver for following the top-k during training.

A thick-restart block Krylov (block Davidson without preconditioner) method:
Rayleigh–Ritz on a basis that starts from given vectors and grows by the
residuals of the unconverged Ritz pairs. When the weights moved little since
the last measurement, the previous eigenvectors are nearly invariant and a
handful of HVPs beyond the first k suffice.

Example:

```python
tracker = EigenTracker(k=5, tol=1e-4, seed=0)
for step in range(steps):
    ...                                   # train
    spectrum = tracker.update(oracle)     # cold the first time, warm after
```
"""
from __future__ import annotations

import numpy as np

from eoskeras.curvature.choices import CRITERIA, check_choice
from eoskeras.curvature.lanczos import error_bounds
from eoskeras.curvature.operators import (
    CountingOperator,
    SymmetricOperator,
    default_max_hvps,
    describe_operator,
    one_blas_thread,
    orthonormal_rows,
    row_norms,
)
from eoskeras.curvature.spectrum import Spectrum


def track_top_k(
    op: SymmetricOperator,
    k: int,
    init: np.ndarray | None = None,
    *,
    tol: float = 1e-4,
    max_hvps: int | None = None,
    max_basis: int | None = None,
    seed: int = 0,
    hold: bool = False,
    criterion: str = "residual",
) -> Spectrum:
    """Top-``k`` algebraically largest eigenpairs, warm-started from ``init``.

    ``init`` (n × m, any m) seeds the search space; missing columns are filled
    with seeded Gaussian vectors. Stops when every ‖H v − θ v‖ ≤ ``tol`` ×
    max|θ| (residuals from actual HVPs) or after ``max_hvps`` HVPs (default
    ``default_max_hvps(k)``). The basis is thick-restarted to the leading Ritz
    vectors when it would exceed ``max_basis`` (default ``max(6 k, 40)``;
    restarting too often slows convergence on clustered spectra).

    ``criterion="eigenvalue"`` makes ``tol`` bound the eigenvalues' error,
    residual² / gap to the nearest other Ritz value (``lanczos.error_bounds``),
    instead of the residuals: fewer HVPs, with the vectors correspondingly
    less exact (on the quickstart's training run, a warm top-5 at tol 1e-3
    took 14.2 instead of 18.75 HVPs, its eigenvalues within 1.6e-4 of a
    solve to 1e-9 against 2.2e-6; 61 measurements).

    ``hold=True`` runs the whole solve in one graph call of an oracle that
    holds its linearisation (``HessianOracle.held_track``) where it can. The
    first such call traces and optimises that graph (0.35 s on the
    quickstart, against 0.12–0.15 s for the block-product graph the host
    path traces), so it pays off for repeated solves, as ``EigenTracker``'s,
    which holds by default.
    """
    return _track(op, k, init, 0, tol=tol, max_hvps=max_hvps, max_basis=max_basis, seed=seed, hold=hold,
                  criterion=criterion)[0]


@one_blas_thread
def _track(op: SymmetricOperator, k: int, init: np.ndarray | None, guard: int, *, tol: float,
           max_hvps: int | None, max_basis: int | None, seed: int, hold: bool = False,
           criterion: str = "residual") -> tuple[Spectrum, np.ndarray]:
    """``track_top_k``, also returning the next warm start: the top k + ``guard``
    Ritz vectors (n × m). ``init`` is filled up to k + ``guard`` columns."""
    n = op.dim
    if not 1 <= k <= n:
        raise ValueError(f"k: got {k}; allowed: 1 <= k <= {n} (the operator's dimension)")
    check_choice("criterion", criterion, CRITERIA)
    max_hvps = max_hvps or default_max_hvps(k)
    max_basis = min(n, max_basis or max(6 * k, 40))
    rng = np.random.default_rng(seed)
    start = np.zeros((n, 0)) if init is None else np.asarray(init, dtype=np.float64).reshape(n, -1)
    if start.shape[1] < min(k + guard, n):
        start = np.hstack([start, rng.standard_normal((n, min(k + guard, n) - start.shape[1]))])
    counter = CountingOperator(op)
    start = orthonormal_rows(start.T)[:max_basis]
    held = counter.held_track(start, k, guard, tol, max_hvps, max_basis, criterion=criterion) if hold else None
    if held is not None:
        return _spectrum(op, k, init, tol, criterion, held.ritz_values, held.vectors[:len(held.residuals)],
                         held.residuals, counter.count, float(held.scale), held.size == n), held.vectors.T
    # Preallocated basis V and H V (vectors as rows) and the projected matrix
    # T = V H Vᵀ, extended in place: each iteration costs O(n · basis · new).
    basis, h_basis = np.empty((max_basis, n)), np.empty((max_basis, n))
    projected = np.zeros((max_basis, max_basis))
    size = 0

    def extend(new: np.ndarray) -> None:
        nonlocal size
        end = size + len(new)
        basis[size:end], h_basis[size:end] = new, counter.matmat(new.T).T
        projected[:end, size:end] = basis[:end] @ h_basis[size:end].T
        projected[size:end, :size] = projected[:size, size:end].T
        size = end

    extend(start)
    while True:
        t = projected[:size, :size]
        theta, s = np.linalg.eigh((t + t.T) / 2)
        theta, s = theta[::-1], s[:, ::-1]  # descending: algebraically largest first
        kk = min(k, len(theta))
        ritz, h_ritz = s[:, :kk].T @ basis[:size], s[:, :kk].T @ h_basis[:size]
        residuals = h_ritz - theta[:kk, None] * ritz
        res = row_norms(residuals)
        scale = max(np.abs(theta).max(), 1e-300)
        done = error_bounds(theta, list(range(kk)), res, criterion) <= tol * scale
        if (kk == k and done.all()) or counter.count >= max_hvps or size == n:
            break  # converged, out of HVPs, or the basis spans the space (a residual is then rounding alone)
        expansion = orthonormal_rows(residuals[~done], basis[:size])[: max_hvps - counter.count]
        if len(expansion) == 0:
            break  # the basis is invariant: the Ritz pairs are exact
        if size + len(expansion) > max_basis:
            # Thick restart: keep the leading Ritz vectors, on which T is diagonal.
            keep = max(k, max_basis - len(expansion))
            basis[:keep], h_basis[:keep] = s[:, :keep].T @ basis[:size], s[:, :keep].T @ h_basis[:size]
            projected[:keep, :keep] = np.diag(theta[:keep])
            size = keep
        extend(expansion)
    warm = np.vstack([ritz, s[:, kk:kk + guard].T @ basis[:size]]).T
    return _spectrum(op, k, init, tol, criterion, theta, ritz, res, counter.count, float(scale), size == n), warm


def _spectrum(op: SymmetricOperator, k: int, init: np.ndarray | None, tol: float, criterion: str,
              theta: np.ndarray, vectors: np.ndarray, residuals: np.ndarray, count: int, scale: float,
              invariant: bool) -> Spectrum:
    """The leading Ritz pairs (``theta``: all the basis's Ritz values,
    descending; vectors as rows) as a Spectrum; converged when every one of
    the k met ``tol`` on ``criterion``'s bound or the basis spans the whole space."""
    kk = len(vectors)
    bounds = error_bounds(theta, list(range(kk)), residuals, criterion)
    return Spectrum(
        eigenvalues=theta[:kk],
        eigenvectors=vectors.T,
        residuals=residuals,
        num_hvps=count,
        converged=bool(kk == k and np.all(bounds <= tol * scale)) or bool(invariant),
        tol=tol,
        method="block-krylov" if init is None else "block-krylov-warm",
        scale=scale,
        info=describe_operator(op),
        criterion=criterion,
    )


class EigenTracker:
    """Follows the top-k eigenpairs across calls, warm-starting each solve
    from the previous eigenvectors.

    ``guard`` more Ritz vectors than the k wanted ride along in the warm start
    (subspace iteration's guard vectors): the k-th pair then converges
    against a wider gap. On the quickstart recipe 3 of them cut a warm top-5
    measurement from 5.1 to 3.6 HVP calls, 21.0 to 19.4 HVPs and 133 to
    114 ms (40 measurements at the same weights, taking turns to go first).

    With ``hold`` (the default) an oracle that can hold its linearisation
    (one micro-batch, reverse mode: ``HessianOracle.held_track``) runs each
    whole solve in one graph call: one forward pass and gradient for all the
    products, and the Rayleigh–Ritz and orthonormalising work in TensorFlow
    between them, with nothing going back to NumPy. On the quickstart a warm
    top-5 measurement took 0.82 of the time driven from the host (38.5 against
    46.6 ms, the same 18.75 HVPs; ``benchmarks/monitor_overhead.py``); the
    graph's trace and first call cost its first measurement 0.14–0.22 s more
    (three runs).
    Adam's preconditioned operator is held too (its scaling goes into the
    graph); others (several micro-batches, Gauss–Newton) are driven from the
    host, with the same iteration and results.

    ``criterion`` is what ``tol`` bounds, as in ``track_top_k``.

    ``state()`` / ``load_state()`` save and restore the vectors (for resuming
    an interrupted run with the same warm start).
    """

    def __init__(self, k: int, *, tol: float = 1e-4, max_hvps: int | None = None, seed: int = 0,
                 guard: int = 3, hold: bool = True, criterion: str = "residual") -> None:
        check_choice("criterion", criterion, CRITERIA)
        self.k, self.tol, self.max_hvps, self.seed, self.guard, self.hold = k, tol, max_hvps, seed, guard, hold
        self.criterion = criterion
        self.vectors: np.ndarray | None = None

    def update(self, op: SymmetricOperator) -> Spectrum:
        spectrum, self.vectors = _track(op, self.k, self.vectors, self.guard, tol=self.tol, max_hvps=self.max_hvps,
                                        max_basis=None, seed=self.seed, hold=self.hold, criterion=self.criterion)
        return spectrum

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.vectors is None else {"vectors": self.vectors}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.vectors = state.get("vectors")
