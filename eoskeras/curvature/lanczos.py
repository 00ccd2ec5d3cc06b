"""(Block) Lanczos with full re-orthogonalisation for the spectral edges.

Example:

```python
spectrum = lanczos(oracle, k=5, tol=1e-6, smallest=True, seed=0)
spectrum.eigenvalues, spectrum.residuals, spectrum.num_hvps, spectrum.converged, spectrum.smallest
```
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from eoskeras.curvature.operators import (
    CountingOperator,
    SymmetricOperator,
    default_max_hvps,
    describe_operator,
    one_blas_thread,
    orthogonal_to_rows,
    orthonormal_rows,
    row_norms,
)
from eoskeras.curvature.choices import CRITERIA, check_choice
from eoskeras.curvature.spectrum import Spectrum

# The residual tolerance of a subset start's solve: its vector only starts the full one.
START_TOL = 1e-2


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
    hold: bool = True,
    *,
    reorthogonalise: bool = True,
    products: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run up to ``steps`` Lanczos steps from ``q0``, by default with full re-orthogonalisation.

    Returns the diagonal ``alphas`` (j), off-diagonal ``betas`` (j − 1), the
    orthonormal basis as rows (j × n) and the last β (the residual coupling).
    ``stop(alphas, betas_with_last)`` may end the run early; a breakdown (an
    invariant subspace found) ends it too. Without ``stop``, an operator that
    can hold its linearisation (``held_lanczos``) runs the steps itself,
    unless ``hold`` is False. ``reorthogonalise=False`` keeps the three-term
    recurrence alone (``held_lanczos``'s loose steps). ``products``, an array
    of ``steps`` rows, receives H times each basis row (as NumPy's ``out=``),
    for a Ritz pair's measured residual.
    """
    held = getattr(op, "held_lanczos", None) if stop is None and hold else None
    result = held(q0, steps) if held is not None else None
    if result is not None:
        return result.alphas, result.betas, result.basis, result.last_beta
    n = op.dim
    steps = min(steps, n)
    basis = np.zeros((steps + 1, n))
    basis[0] = q0 / np.linalg.norm(q0)
    alphas, betas = np.zeros(steps), np.zeros(steps)
    j = 0
    for j in range(steps):
        w = np.asarray(op.matvec(basis[j]), dtype=np.float64)
        if products is not None:
            products[j] = w  # a copy, before the recurrence changes w in place
        alphas[j] = basis[j] @ w
        w -= alphas[j] * basis[j] + (betas[j - 1] * basis[j - 1] if j else 0.0)  # the three-term recurrence
        if reorthogonalise:
            # Full re-orthogonalisation against every earlier vector: one pass, and a second
            # where the first cancelled much (the Daniel-Gragg-Kaufman-Stewart test).
            w = orthogonal_to_rows(w, basis[: j + 1])
        betas[j] = np.linalg.norm(w)
        scale = max(np.abs(alphas[: j + 1]).max(), betas[: j + 1].max(), 1e-300)
        breakdown = betas[j] <= 1e-12 * scale
        if breakdown or (stop is not None and stop(alphas[: j + 1], betas[: j + 1])):
            break
        basis[j + 1] = w / betas[j]
    m = j + 1
    last_beta = 0.0 if betas[m - 1] <= 1e-12 * max(np.abs(alphas[:m]).max(), 1e-300) else betas[m - 1]
    return alphas[:m], betas[: m - 1], basis[:m], float(last_beta)


def within_tol(theta: np.ndarray, wanted: list[int], residuals: np.ndarray, tol: float, criterion: str,
               second: float = -np.inf) -> bool:
    """Whether every wanted Ritz pair's bound (``error_bounds``) is at most ``tol`` × max|θ|: the solvers' stopping rule."""
    bounds = error_bounds(theta, wanted, residuals, criterion, second)
    return bool(np.all(bounds <= tol * max(np.abs(theta).max(), 1e-300)))


def error_bounds(theta: np.ndarray, wanted: list[int], residuals: np.ndarray, criterion: str,
                 second: float = -np.inf) -> np.ndarray:
    """What ``tol`` bounds for the Ritz pairs ``wanted``: the residuals, or
    (``"eigenvalue"``) the eigenvalue errors, residual² / gap with the gap to
    the nearest other Ritz value (the gap theorem's bound |θ − λ| ≤ r²/gap,
    with the Ritz gap standing in for the true one). One Ritz value has no gap.

    Ritz values underestimate the eigenvalues below the top, so the Ritz gap
    overestimates the true one most where the Krylov space is smallest: from
    a good start, 2 steps. ``second``, an estimate of the second-largest
    eigenvalue from elsewhere (a subset start's solve), caps the top's gap."""
    if criterion == "residual":
        return residuals
    if len(theta) < 2:
        return np.full(len(wanted), np.inf)
    gaps = np.array([np.abs(np.delete(theta, i) - theta[i]).min() for i in wanted])
    if wanted[0] == 0 and second < theta[0]:
        gaps[0] = min(gaps[0], theta[0] - second)
    return np.where(gaps > 0, residuals ** 2 / np.maximum(gaps, 1e-300), np.inf)


def block_lanczos_iteration(
    op: CountingOperator,
    start: np.ndarray,
    max_hvps: int,
    stop: Callable[[np.ndarray, np.ndarray, np.ndarray], bool],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Block Lanczos with full re-orthogonalisation from the rows of ``start``.

    Each step multiplies the newest block by H (one ``matmat``), projects it
    on the whole basis (which fills the block of T = V H Vᵀ explicitly) and
    orthonormalises the remainder into the next block, dropping dependent
    directions. A block of p vectors sees eigenvalues of multiplicity up to
    p, which single-vector Lanczos cannot. ``stop(theta, s, estimates)``
    sees the Ritz values (descending), their coefficient vectors and the
    residual estimates ‖remainderᵀ s_last‖. Returns θ, s, the basis (rows)
    and H times each basis row (rows).
    """
    n = op.dim
    basis = np.empty((min(n, max_hvps + start.shape[0]), n))
    products = np.empty_like(basis)
    projected = np.zeros((len(basis), len(basis)))
    block, size = orthonormal_rows(start), 0
    while True:
        width = len(block)
        product = op.matmat(block.T).T
        end = size + width
        basis[size:end], products[size:end] = block, product
        coeffs = basis[:end] @ product.T  # T[:end, size:end]
        projected[:end, size:end] = coeffs
        projected[size:end, :size] = coeffs[:size].T
        remainder = product - coeffs.T @ basis[:end]
        size = end
        t = projected[:size, :size]
        theta, s = np.linalg.eigh((t + t.T) / 2)
        theta, s = theta[::-1], s[:, ::-1]
        # ‖(sᵀ remainder)_i‖ for every Ritz vector i without forming that size × n
        # product: remainder = uᵀ Qᵀ with Qᵀ's rows orthonormal, so the norms are uᵀ's.
        u = np.linalg.qr(remainder.T, mode="r")
        estimates = row_norms(s[size - width:size].T @ u.T)
        scale = max(np.abs(theta).max(), 1e-300)
        invariant = row_norms(remainder).max() <= 1e-12 * scale
        if invariant or size >= n or stop(theta, s, estimates) or op.count >= max_hvps:
            return theta, s, basis[:size], products[:size]
        block = orthonormal_rows(remainder, basis[:size])[: max(1, min(width, max_hvps - op.count, n - size))]
        if len(block) == 0:
            return theta, s, basis[:size], products[:size]


class HeldTop(NamedTuple):
    """What ``held_top`` returns: the Ritz values (descending), the top Ritz
    vector, H times it (from the steps' products) and the HVPs taken."""

    theta: np.ndarray
    vector: np.ndarray
    product: np.ndarray
    hvps: int


def held_top(op: SymmetricOperator, counter: CountingOperator, q0: np.ndarray, max_hvps: int, *, tol: float,
             criterion: str, second: float = -np.inf, subset: int | None = None, seed: int = 0,
             reorthogonalise: bool = True) -> HeldTop | None:
    """Lanczos from ``q0`` for the top pair, to ``tol`` on ``criterion``'s
    bound (``error_bounds`` with ``second``), holding an oracle's
    linearisation across its steps: on an eager tape (``op.linearisation``)
    for a fresh oracle's first solve, which then traces nothing, else in the
    oracle's held graph (``held_lanczos``). Both run the same iteration,
    ``lanczos_iteration``'s, with the same arguments and stopping rule.
    ``counter`` counts the HVPs on all the data. None where the oracle holds
    nothing."""
    linearisation = getattr(op, "linearisation", None)
    eager = linearisation(max_hvps, subset, seed) if linearisation is not None else None
    if eager is not None:
        def stop(alphas, betas):  # the held graph's test: the top pair's bound from T alone
            theta, s = tridiagonal_eigh(alphas, betas[:-1])
            estimate = np.array([betas[-1] * abs(s[-1, -1])])
            return within_tol(theta[::-1], [0], estimate, tol, criterion, second)

        counted = CountingOperator(eager)
        products = np.empty((min(max_hvps, op.dim), op.dim))
        alphas, betas, basis, _ = lanczos_iteration(counted, q0, max_hvps, stop, reorthogonalise=reorthogonalise,
                                                    products=products)
        counter.count += counted.count if subset is None else 0
        theta, s = tridiagonal_eigh(alphas, betas)
        vector, product = s[:, -1] @ basis, s[:, -1] @ products[:len(alphas)]
        norm = np.linalg.norm(vector)
        return HeldTop(theta[::-1], vector / norm, product / norm, counted.count)
    held = counter.held_lanczos(q0, max_hvps, tol, criterion, subset=subset, seed=seed, second=second,
                                reorthogonalise=reorthogonalise)
    if held is None:
        return None
    return HeldTop(tridiagonal_eigh(held.alphas, held.betas)[0][::-1], held.ritz, held.product, len(held.alphas))


@one_blas_thread
def lanczos(
    op: SymmetricOperator,
    k: int = 5,
    *,
    tol: float = 1e-6,
    max_hvps: int | None = None,
    smallest: bool = False,
    seed: int = 0,
    v0: np.ndarray | None = None,
    criterion: str = "residual",
    hold: bool = True,
    start_examples: int | None = None,
) -> Spectrum:
    """Top-``k`` algebraically largest eigenpairs (and the smallest, on request).

    Block Lanczos with full re-orthogonalisation, block size ``k`` (plain
    Lanczos for k = 1), from seeded Gaussian start vectors (or ``v0``, n or
    n × k): a block of k vectors finds repeated and clustered eigenvalues,
    where single-vector Lanczos returns a wrong multiplicity (on
    diag(5, 3, 3, 1) it finds [5, 3, 1]). The solve stops when every wanted
    Ritz pair's residual estimate is at most ``tol`` × max|θ|, or after
    ``max_hvps`` HVPs (default ``default_max_hvps(k)``). The returned
    ``residuals`` are then *measured*, ‖H v − θ v‖ with H v combined from
    the products of H with the basis that the solve computed (the solver's
    own estimates assume exact arithmetic), and ``converged`` is judged on them.

    ``criterion="eigenvalue"`` makes ``tol`` bound the eigenvalues' error
    rather than the residuals: residual² / gap (``error_bounds``), which
    Lanczos reaches in fewer steps (on the peer benchmark's MLP, 8–9 HVPs
    instead of 11–12 for 1e-3), with the vectors correspondingly less exact.

    For k = 1 on a ``HessianOracle`` whose data is one micro-batch, the
    steps hold the forward pass and gradient, each step one backward pass
    instead of a fresh HVP (``held_top``): the oracle's first solve on one
    eager tape, which traces nothing, later ones inside one graph call
    (``HessianOracle.held_lanczos``, traced on the second solve: 0.3–0.5 s on
    the peer benchmark's MLP, where a graph step then costs about 2/3 of an
    eager one). Same iteration, same stopping rule; ``hold=False`` drives
    every step from here.

    ``start_examples=m`` (k = 1, held) first solves, to ``START_TOL``, the
    Hessian of m of the oracle's examples drawn at random (``seed``), and
    starts from its top Ritz vector: the full solve then checks the same
    bound on all the data, from a start that already points along the top
    eigenvector (cosine 0.995 with 500 of the peer benchmark's 4,000
    digits). There it took 4–5 full-data HVPs instead of 10–13 (residual
    criterion) and 2 instead of 8–11 (eigenvalue), plus 8–11 of the
    subset's (a step 11 ms against 44), at the same accuracy. The subset's
    second Ritz value caps the gap the eigenvalue criterion divides by.
    ``spectrum.info`` records m and the subset's HVPs, which ``num_hvps``
    does not count.
    """
    n = op.dim
    if not 1 <= k <= n:
        raise ValueError(f"k: got {k}; allowed: 1 <= k <= {n} (the operator's dimension)")
    check_choice("criterion", criterion, CRITERIA)
    max_hvps = min(n, max_hvps or default_max_hvps(k))
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((k, n)) if v0 is None else np.asarray(v0, dtype=np.float64).reshape(-1, n)
    counter = CountingOperator(op)

    def stop(theta, s, estimates):
        wanted = list(range(k)) + ([len(theta) - 1] if smallest else [])
        return len(theta) >= k and within_tol(theta, wanted, estimates[wanted], tol, criterion)

    # One vector from an oracle: Lanczos that holds the linearisation (eager
    # or in one graph call), which also measures the top Ritz pair's residual.
    holding = hold and k == 1 and not smallest
    if start_examples is not None and not holding:
        raise ValueError("start_examples: allowed only for k=1 without smallest=True, hold=True")
    held, second, start_info = None, -np.inf, {}
    if holding:
        q0 = start[0]
        if start_examples is not None:
            first = held_top(op, counter, q0, max_hvps, tol=START_TOL, criterion="residual", subset=start_examples,
                             seed=seed, reorthogonalise=False)
            if first is None:
                raise ValueError("start_examples: allowed only on a HessianOracle that can hold its "
                                 "linearisation (one micro-batch, reverse mode, no XLA)")
            q0, second = first.vector, (first.theta[1] if len(first.theta) > 1 else -np.inf)
            start_info = {"start_examples": start_examples, "start_hvps": first.hvps}
        held = held_top(op, counter, q0, max_hvps, tol=tol, criterion=criterion, second=second)
    if held is not None:
        theta, wanted, vectors, products = held.theta, [0], held.vector[:, None], held.product[:, None]
    else:
        theta, s, basis, h_basis = block_lanczos_iteration(counter, start, max_hvps, stop)
        if len(theta) < k:
            raise RuntimeError(f"Lanczos found an invariant subspace of dimension {len(theta)} < k={k}; "
                               "pass another v0/seed")
        wanted = list(range(k)) + ([len(theta) - 1] if smallest else [])
        ritz, h_ritz = s[:, wanted].T @ basis, s[:, wanted].T @ h_basis
        norms = row_norms(ritz)
        vectors, products = ritz.T / norms, h_ritz.T / norms
    residuals = np.linalg.norm(products - vectors * theta[wanted], axis=0)
    scale = max(np.abs(theta).max(), 1e-300)
    return Spectrum(
        eigenvalues=theta[:k],
        eigenvectors=vectors[:, :k],
        residuals=residuals[:k],
        num_hvps=counter.count,
        converged=within_tol(theta, wanted, residuals, tol, criterion, second),
        tol=tol,
        method="lanczos" if k == 1 else "block-lanczos",
        scale=float(scale),
        smallest=float(theta[-1]) if smallest else None,
        smallest_vector=vectors[:, k] if smallest else None,
        smallest_residual=float(residuals[k]) if smallest else None,
        info={**describe_operator(op), **start_info},
        criterion=criterion,
    )
