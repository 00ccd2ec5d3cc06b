"""Lanczos with full re-orthogonalisation for the spectral edges.

Example:

```python
spectrum = lanczos(oracle, k=5, tol=1e-6, smallest=True, seed=0)
spectrum.eigenvalues, spectrum.residuals, spectrum.num_hvps, spectrum.smallest
```
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from eoskeras.curvature.operators import CountingOperator, SymmetricOperator, describe_operator
from eoskeras.curvature.spectrum import Spectrum


def tridiagonal_eigh(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition (ascending, float64) of the symmetric tridiagonal
    matrix with diagonal ``alphas`` and off-diagonal ``betas``."""
    t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    return np.linalg.eigh(t)


def lanczos_iteration(
    op: SymmetricOperator,
    q0: np.ndarray,
    steps: int,
    stop: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run up to ``steps`` Lanczos steps from ``q0`` with full re-orthogonalisation.

    Returns the diagonal ``alphas`` (j), off-diagonal ``betas`` (j − 1), the
    orthonormal basis as rows (j × n) and the last β (the residual coupling).
    ``stop(alphas, betas_with_last)`` may end the run early; a breakdown (an
    invariant subspace found) ends it too.
    """
    n = op.dim
    steps = min(steps, n)
    basis = np.zeros((steps + 1, n))
    basis[0] = q0 / np.linalg.norm(q0)
    alphas, betas = np.zeros(steps), np.zeros(steps)
    j = 0
    for j in range(steps):
        w = np.asarray(op.matvec(basis[j]), dtype=np.float64)
        alphas[j] = basis[j] @ w
        # Full re-orthogonalisation against every earlier vector, twice
        # (written as row-vector products: several times faster in NumPy).
        for _ in range(2):
            w -= (basis[: j + 1] @ w) @ basis[: j + 1]
        betas[j] = np.linalg.norm(w)
        scale = max(np.abs(alphas[: j + 1]).max(), betas[: j + 1].max(), 1e-300)
        breakdown = betas[j] <= 1e-12 * scale
        if breakdown or (stop is not None and stop(alphas[: j + 1], betas[: j + 1])):
            break
        basis[j + 1] = w / betas[j]
    m = j + 1
    last_beta = 0.0 if betas[m - 1] <= 1e-12 * max(np.abs(alphas[:m]).max(), 1e-300) else betas[m - 1]
    return alphas[:m], betas[: m - 1], basis[:m], float(last_beta)


def lanczos(
    op: SymmetricOperator,
    k: int = 5,
    *,
    tol: float = 1e-6,
    max_steps: int | None = None,
    smallest: bool = False,
    seed: int = 0,
    v0: np.ndarray | None = None,
    check_every: int = 1,
) -> Spectrum:
    """Top-``k`` algebraically largest eigenpairs (and the smallest, on request).

    Runs Lanczos with full re-orthogonalisation from a seeded Gaussian start
    (or ``v0``) until every wanted Ritz pair has a residual
    ‖H v − θ v‖ ≤ ``tol`` × max|θ| (the Lanczos estimate β_j |s_j|, exact in
    exact arithmetic), or ``max_steps`` HVPs (default ``min(dim, max(10 k, 100))``).
    The tridiagonal matrix is solved in float64.
    """
    n = op.dim
    if not 1 <= k <= n:
        raise ValueError(f"k: got {k}; allowed: 1 <= k <= {n} (the operator's dimension)")
    max_steps = min(n, max_steps or max(10 * k, 100))
    rng = np.random.default_rng(seed)
    q0 = rng.standard_normal(n) if v0 is None else np.asarray(v0, dtype=np.float64)
    counter = CountingOperator(op)

    def wanted_residuals(alphas, betas_with_last):
        theta, s = tridiagonal_eigh(alphas, betas_with_last[:-1])
        res = betas_with_last[-1] * np.abs(s[-1])
        idx = list(range(len(theta) - 1, max(len(theta) - 1 - k, -1), -1))
        if smallest:
            idx.append(0)
        return theta, s, res, idx

    def stop(alphas, betas_with_last):
        j = len(alphas)
        if j < k or (j % check_every and j < max_steps):
            return False
        theta, _, res, idx = wanted_residuals(alphas, betas_with_last)
        return bool(np.all(res[idx] <= tol * max(np.abs(theta).max(), 1e-300)))

    alphas, betas, basis, last_beta = lanczos_iteration(counter, q0, max_steps, stop)
    theta, s, _, _ = wanted_residuals(alphas, np.append(betas, last_beta))
    res = last_beta * np.abs(s[-1])
    scale = max(np.abs(theta).max(), 1e-300)
    if len(theta) < k:
        raise RuntimeError(f"Lanczos found an invariant subspace of dimension {len(theta)} < k={k}; pass another v0/seed")
    top = np.arange(len(theta) - 1, len(theta) - 1 - k, -1)
    vectors = (s[:, top].T @ basis).T
    wanted = list(top) + ([0] if smallest else [])
    return Spectrum(
        eigenvalues=theta[top],
        eigenvectors=vectors / np.linalg.norm(vectors, axis=0),
        residuals=res[top],
        num_hvps=counter.count,
        converged=bool(np.all(res[wanted] <= tol * scale)),
        tol=tol,
        method="lanczos",
        scale=float(scale),
        smallest=float(theta[0]) if smallest else None,
        smallest_vector=(s[:, 0] @ basis) if smallest else None,
        smallest_residual=float(res[0]) if smallest else None,
        info=describe_operator(op),
    )
