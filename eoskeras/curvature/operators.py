"""What the eigen-solvers need from an operator, and a dense one for tests.

Any object with an integer ``dim`` and a ``matvec(v) -> H v`` on flat float64
numpy vectors works: ``HessianOracle`` is one, ``DenseOperator`` another.
"""
from __future__ import annotations

import functools
from typing import Callable, Protocol, TypeVar, runtime_checkable

import numpy as np
from threadpoolctl import ThreadpoolController


_BLAS = ThreadpoolController()
Solver = TypeVar("Solver", bound=Callable)


def one_blas_thread(solver: Solver) -> Solver:
    """Run ``solver`` with NumPy's BLAS on one thread.

    A solver alternates NumPy products with TensorFlow's HVPs; with both
    thread pools busy-waiting for the same cores, the quickstart's monitoring
    took 29.1 s instead of 13.4 s on 2 cores. Its NumPy work is a few
    memory-bound products per HVP, which one thread does nearly as fast.
    """
    @functools.wraps(solver)
    def wrapped(*args, **kwargs):
        with _BLAS.limit(limits=1, user_api="blas"):
            return solver(*args, **kwargs)
    return wrapped  # type: ignore[return-value]


@runtime_checkable
class SymmetricOperator(Protocol):
    dim: int

    def matvec(self, v: np.ndarray) -> np.ndarray: ...


class DenseOperator:
    """A symmetric matrix as an operator that counts its products.

    Example: ``lanczos(DenseOperator(np.diag([3.0, 1.0, -5.0])), k=1)``.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.dim = self.matrix.shape[0]
        self.num_hvps = 0

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.num_hvps += 1
        return self.matrix @ v


class CountingOperator:
    """Wraps an operator and counts the products made through the wrapper."""

    def __init__(self, op: SymmetricOperator) -> None:
        self.op, self.dim, self.count = op, op.dim, 0

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.count += 1
        return np.asarray(self.op.matvec(v), dtype=np.float64)

    def matmat(self, block: np.ndarray) -> np.ndarray:
        """H times each column, in one call when the operator can batch them."""
        return apply_block(self.op, block, self)

    def quadratic_forms(self, block: np.ndarray) -> np.ndarray:
        """vᵀHv for each column v of ``block``: in one call, with nothing
        dim-sized coming back, when the operator has ``quadratic_forms``."""
        forms = getattr(self.op, "quadratic_forms", None)
        if forms is None:
            return np.einsum("ij,ij->j", block, self.matmat(block))
        self.count += block.shape[1]
        return np.asarray(forms(block), dtype=np.float64)

    def held_lanczos(self, q0: np.ndarray, steps: int, tol: float = 0.0, criterion: str = "residual",
                     **options):
        """The operator's own Lanczos holding its linearisation across steps
        (``HessianOracle.held_lanczos``, with its ``options``), counted unless
        on a subset of the data; None where it has none."""
        held = getattr(self.op, "held_lanczos", None)
        result = held(q0, steps, tol, criterion, **options) if held is not None else None
        if result is not None and options.get("subset") is None:
            self.count += len(result.alphas)
        return result

    def held_track(self, start: np.ndarray, k: int, guard: int, tol: float, max_hvps: int, max_basis: int,
                   criterion: str = "residual"):
        """The operator's own block iteration holding its linearisation
        (``HessianOracle.held_track``), counted; None where it has none."""
        held = getattr(self.op, "held_track", None)
        result = held(start, k, guard, tol, max_hvps, max_basis, criterion=criterion) if held is not None else None
        if result is not None:
            self.count += int(result.count)
        return result


def apply_block(op, block: np.ndarray, counter: "CountingOperator | None" = None) -> np.ndarray:
    """``op`` applied to the columns of ``block``: through ``op.matmat`` when
    it exists (e.g. the oracle's blocks sharing one linearisation), else column by column."""
    if counter is not None:
        counter.count += block.shape[1]
    matmat = getattr(op, "matmat", None)
    if matmat is not None:
        return np.asarray(matmat(block), dtype=np.float64)
    return np.stack([np.asarray(op.matvec(c), dtype=np.float64) for c in block.T], axis=1)


def row_norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, in one pass over ``a`` (``np.linalg.norm``
    makes a squared copy first: on the solvers' 199,210-long rows, 3× slower)."""
    return np.sqrt(np.einsum("ij,ij->i", a, a))


def orthogonal_to_rows(w: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``w`` (a vector or rows) with its components along the orthonormal rows
    of ``basis`` removed. Classical Gram-Schmidt, repeated only where it
    cancelled much of a row (the Daniel-Gragg-Kaufman-Stewart test): a Ritz
    residual or a Lanczos remainder is orthogonal to the basis but for
    rounding, and each pass reads the whole basis, the solvers' largest cost
    on the host. Rows, because NumPy's BLAS is several times faster at
    (small × n) @ ... products than at tall-skinny (n × small) ones."""
    before = row_norms(np.atleast_2d(w))
    w = w - (w @ basis.T) @ basis
    if np.any(row_norms(np.atleast_2d(w)) < before / np.sqrt(2)):
        w = w - (w @ basis.T) @ basis
    return w


def orthonormal_rows(w: np.ndarray, basis: np.ndarray | None = None, drop_below: float = 1e-10) -> np.ndarray:
    """Orthonormal rows spanning rows(w) ⊥ rows(basis) (``basis`` rows
    orthonormal), dropping near-dependent directions (QR diagonal below
    ``drop_below`` × the largest row norm).

    Vectors are stored as rows because NumPy's BLAS is several times faster
    at (small × n) @ ... products than at tall-skinny (n × small) ones.
    """
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    if basis is not None and len(basis):
        w = orthogonal_to_rows(w, basis)
    elif np.abs(w @ w.T - np.eye(len(w))).max() <= 1e-12:
        # Already orthonormal (a tracker's warm start of Ritz vectors): a Gram matrix
        # costs a fraction of the QR.
        return np.ascontiguousarray(w)
    scale = max(row_norms(w).max(initial=0.0), 1e-300)
    r = np.linalg.qr(w.T, mode="r")
    diagonal = np.abs(np.diag(r))
    if 0 < len(diagonal) == len(w) and diagonal.min() > 1e-4 * diagonal.max():
        # Well conditioned: Q = W R⁻¹ is orthonormal to ~1e-12 and costs a fifth of
        # forming Q from the Householder reflectors.
        return np.ascontiguousarray(np.linalg.inv(r).T @ w)
    q, r = np.linalg.qr(w.T)
    return np.ascontiguousarray(q[:, np.abs(np.diag(r)) > drop_below * scale].T)


def default_max_hvps(k: int) -> int:
    """The eigensolvers' default HVP budget for the top ``k``: enough for a
    cold start on the bundled recipes' spectra (clustered at the Edge of
    Stability) to converge at their tolerances."""
    return max(40 * k, 200)


def describe_operator(op: SymmetricOperator) -> dict:
    """The operator's own record of how it computes (e.g. an oracle's modes)."""
    describe = getattr(op, "describe", None)
    return dict(describe()) if callable(describe) else {}


class PreconditionedOperator:
    """P^{-1/2} H P^{-1/2} for a diagonal preconditioner P (e.g. Adam's √v̂ + ε).

    Its eigenvalues are those of P⁻¹H: the *preconditioned sharpness* that
    adaptive optimisers compare against their stability threshold.
    """

    def __init__(self, op: SymmetricOperator, diagonal: np.ndarray) -> None:
        diagonal = np.asarray(diagonal, dtype=np.float64)
        if diagonal.shape != (op.dim,) or np.any(diagonal <= 0):
            raise ValueError(f"the preconditioner must be {op.dim} positive numbers")
        self.op, self.dim = op, op.dim
        self._scale = diagonal ** -0.5

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self._scale * self.op.matvec(self._scale * v)

    def matmat(self, block: np.ndarray) -> np.ndarray:
        return self._scale[:, None] * apply_block(self.op, self._scale[:, None] * block)

    def held_track(self, start: np.ndarray, k: int, guard: int, tol: float, max_hvps: int, max_basis: int,
                   scale: np.ndarray | None = None, criterion: str = "residual"):
        """The wrapped operator's held block iteration on P^{-1/2} H P^{-1/2}
        (``HessianOracle.held_track``), or None where it has none."""
        held = getattr(self.op, "held_track", None)
        combined = self._scale if scale is None else self._scale * scale
        return None if held is None else held(start, k, guard, tol, max_hvps, max_basis, scale=combined,
                                              criterion=criterion)

    def describe(self) -> dict:
        return {**describe_operator(self.op), "preconditioned": True}
