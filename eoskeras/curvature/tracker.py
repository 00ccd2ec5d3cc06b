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

from eoskeras.curvature.operators import (
    CountingOperator,
    SymmetricOperator,
    default_max_hvps,
    describe_operator,
    one_blas_thread,
    orthonormal_rows,
)
from eoskeras.curvature.spectrum import Spectrum


@one_blas_thread
def track_top_k(
    op: SymmetricOperator,
    k: int,
    init: np.ndarray | None = None,
    *,
    tol: float = 1e-4,
    max_hvps: int | None = None,
    max_basis: int | None = None,
    seed: int = 0,
) -> Spectrum:
    """Top-``k`` algebraically largest eigenpairs, warm-started from ``init``.

    ``init`` (n × m, any m) seeds the search space; missing columns are filled
    with seeded Gaussian vectors. Stops when every ‖H v − θ v‖ ≤ ``tol`` ×
    max|θ| (residuals from actual HVPs) or after ``max_hvps`` HVPs (default
    ``default_max_hvps(k)``). The basis is thick-restarted to the leading Ritz
    vectors when it would exceed ``max_basis`` (default ``max(6 k, 40)``;
    restarting too often slows convergence on clustered spectra).
    """
    n = op.dim
    if not 1 <= k <= n:
        raise ValueError(f"k: got {k}; allowed: 1 <= k <= {n} (the operator's dimension)")
    max_hvps = max_hvps or default_max_hvps(k)
    max_basis = min(n, max_basis or max(6 * k, 40))
    rng = np.random.default_rng(seed)
    start = np.zeros((n, 0)) if init is None else np.asarray(init, dtype=np.float64).reshape(n, -1)
    if start.shape[1] < k:
        start = np.hstack([start, rng.standard_normal((n, k - start.shape[1]))])
    counter = CountingOperator(op)
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

    extend(orthonormal_rows(start.T)[:max_basis])
    while True:
        t = projected[:size, :size]
        theta, s = np.linalg.eigh((t + t.T) / 2)
        theta, s = theta[::-1], s[:, ::-1]  # descending: algebraically largest first
        kk = min(k, len(theta))
        ritz, h_ritz = s[:, :kk].T @ basis[:size], s[:, :kk].T @ h_basis[:size]
        residuals = h_ritz - theta[:kk, None] * ritz
        res = np.linalg.norm(residuals, axis=1)
        scale = max(np.abs(theta).max(), 1e-300)
        done = res <= tol * scale
        if (kk == k and done.all()) or counter.count >= max_hvps:
            break
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
    return Spectrum(
        eigenvalues=theta[:kk],
        eigenvectors=ritz.T,
        residuals=res,
        num_hvps=counter.count,
        converged=bool(kk == k and done.all()) or size == n,
        tol=tol,
        method="block-krylov" if init is None else "block-krylov-warm",
        scale=float(scale),
        info=describe_operator(op),
    )


class EigenTracker:
    """Follows the top-k eigenpairs across calls, warm-starting each solve
    from the previous eigenvectors.

    ``state()`` / ``load_state()`` save and restore the vectors (for resuming
    an interrupted run with the same warm start).
    """

    def __init__(self, k: int, *, tol: float = 1e-4, max_hvps: int | None = None, seed: int = 0) -> None:
        self.k, self.tol, self.max_hvps, self.seed = k, tol, max_hvps, seed
        self.vectors: np.ndarray | None = None

    def update(self, op: SymmetricOperator) -> Spectrum:
        spectrum = track_top_k(op, self.k, self.vectors, tol=self.tol, max_hvps=self.max_hvps, seed=self.seed)
        self.vectors = spectrum.eigenvectors
        return spectrum

    def state(self) -> dict[str, np.ndarray]:
        return {} if self.vectors is None else {"vectors": self.vectors}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.vectors = state.get("vectors")
