"""The tracker's block eigensolver as TensorFlow ops, for one graph call.

``tracker._track`` drives its products from NumPy: each block of them is a
graph call that recomputes the forward pass and gradient, and between calls
its host work (Rayleigh–Ritz, residuals, orthonormalising the expansion)
passes over the basis on one thread. ``block_eigenpairs`` is the same
iteration written in TensorFlow ops, so that ``HessianOracle.held_track`` can
run a whole measurement in one call holding the linearisation, as
``held_lanczos`` does for single-vector Lanczos. Both are tested against each
other and the dense Hessian (``tests/test_held_tracker.py``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

# Expansion rows whose norm after the projection falls below this × the largest are
# dropped as dependent (as ``operators.orthonormal_rows``), and so are directions among
# them with singular values below ``DEPENDENT`` × the largest.
DROP_BELOW, DEPENDENT = 1e-10, 1e-7


class HeldTrack(NamedTuple):
    """What ``block_eigenpairs`` returns (descending eigenvalues)."""

    ritz_values: tf.Tensor  # all the final basis's (the top min(k, basis) are the eigenvalues; the
                            # rest give the eigenvalue criterion its gaps)
    vectors: tf.Tensor      # the top min(k, basis) Ritz vectors and then ``guard`` more (rows)
    residuals: tf.Tensor    # ‖H v − θ v‖ of the top min(k, basis), from the products
    scale: tf.Tensor        # max |θ| over the basis, which ``tol`` is relative to
    count: tf.Tensor        # products computed
    size: tf.Tensor         # the final basis's size (the dimension: an invariant basis)


def block_eigenpairs(products: Callable[[tf.Tensor], tf.Tensor], start: tf.Tensor, k: tf.Tensor, guard: tf.Tensor,
                     tol: tf.Tensor, max_hvps: tf.Tensor, max_basis: tf.Tensor,
                     eigenvalue: tf.Tensor | bool = False) -> HeldTrack:
    """``tracker._track``'s thick-restart block Krylov iteration on ``products``
    (rows in, H times each row out, float64) from the orthonormal rows
    ``start``: Rayleigh–Ritz, then the basis grows by the orthonormalised
    residuals of the unconverged pairs among the top k, until each of those has
    ‖H v − θ v‖ ≤ ``tol`` × max|θ| (with ``eigenvalue``, ‖H v − θ v‖² / gap:
    ``lanczos.error_bounds``), ``max_hvps`` products are spent, or the basis
    is invariant; thick-restarted to its leading Ritz vectors when it would
    exceed ``max_basis`` rows."""

    def ritz(basis, h_basis, projected):
        theta, s = tf.linalg.eigh((projected + tf.transpose(projected)) / 2)
        theta, s = tf.reverse(theta, [0]), tf.reverse(s, [1])  # algebraically largest first
        # The leading k + guard Ritz vectors in the pass over the basis that the top k's take
        # (the warm start's guard vectors then cost no second pass), the top k's residuals.
        vectors = tf.matmul(tf.transpose(s[:, :k + guard]), basis)  # transpose_a reads the basis twice as slowly
        kk = tf.minimum(k, tf.size(theta))
        residuals = tf.matmul(tf.transpose(s[:, :kk]), h_basis) - theta[:kk, None] * vectors[:kk]
        return theta, s, vectors, residuals

    def finished(theta, residuals, count):
        norms, scale = _row_norms(residuals), tf.maximum(tf.reduce_max(tf.abs(theta)), 1e-300)
        done = tf.where(eigenvalue, _eigenvalue_bounds(theta, norms), norms) <= tol * scale
        return norms, done, (tf.equal(tf.size(norms), k) & tf.reduce_all(done)) | (count >= max_hvps)

    def step(basis, h_basis, projected, theta, s, new, count, _vectors, _norms, _stop):
        m = tf.shape(new)[0]

        def restart():  # keep the leading Ritz vectors, on which the projected matrix is diagonal
            keep = tf.maximum(k, max_basis - m)
            lead = tf.transpose(s[:, :keep])
            return tf.matmul(lead, basis), tf.matmul(lead, h_basis), tf.linalg.diag(theta[:keep])

        basis, h_basis, projected = tf.cond(tf.shape(basis)[0] + m > max_basis, restart,
                                            lambda: (basis, h_basis, projected))
        h_new = products(new)
        across = tf.matmul(basis, h_new, transpose_b=True)  # old rows × new products
        projected = tf.concat([tf.concat([projected, across], 1),
                               tf.concat([tf.transpose(across), tf.matmul(new, h_new, transpose_b=True)], 1)], 0)
        basis, h_basis, count = tf.concat([basis, new], 0), tf.concat([h_basis, h_new], 0), count + m
        theta, s, vectors, residuals = ritz(basis, h_basis, projected)
        norms, done, stop = finished(theta, residuals, count)
        # A basis that spans the space is invariant (its residuals are rounding alone).
        stop |= tf.shape(basis)[0] >= dim

        def expansion():  # the leading pairs' residuals within the budget, as the host's QR keeps the first rows
            budget = tf.maximum(max_hvps - count, 0)
            return _orthonormal_against(tf.boolean_mask(residuals, ~done)[:budget], basis,
                                        tf.boolean_mask(norms, ~done)[:budget])

        new = tf.cond(stop, lambda: tf.zeros([0, dim], tf.float64), expansion)
        return basis, h_basis, projected, theta, s, new, count, vectors, norms, stop | tf.equal(tf.shape(new)[0], 0)

    # One loop from an empty basis, so that the products' backward pass is traced once.
    dim = start.shape[1]
    rows, square, values = tf.TensorShape([None, dim]), tf.TensorShape([None, None]), tf.TensorShape([None])
    empty = tf.zeros([0, dim], tf.float64)
    state = (empty, empty, tf.zeros([0, 0], tf.float64), tf.zeros([0], tf.float64), tf.zeros([0, 0], tf.float64),
             start, tf.constant(0), empty, tf.zeros([0], tf.float64), tf.constant(False))
    basis, _, _, theta, _, _, count, vectors, norms, _ = tf.while_loop(
        lambda *state: ~state[-1], step, state,
        shape_invariants=(rows, rows, square, values, square, rows, tf.TensorShape([]), rows, values,
                          tf.TensorShape([])))
    return HeldTrack(theta, vectors, norms, tf.maximum(tf.reduce_max(tf.abs(theta)), 1e-300), count, tf.shape(basis)[0])


def _eigenvalue_bounds(theta: tf.Tensor, norms: tf.Tensor) -> tf.Tensor:
    """``lanczos.error_bounds``'s eigenvalue bounds of the leading Ritz pairs
    (``norms``, their residuals): residual² / the gap to the nearest other
    Ritz value, infinite where there is none or it is zero."""
    others = tf.abs(theta[:tf.size(norms), None] - theta[None, :])
    gaps = tf.reduce_min(tf.linalg.set_diag(others, tf.fill([tf.size(norms)], tf.constant(np.inf, tf.float64))),
                         axis=1)
    return tf.where((gaps > 0) & (gaps < np.inf), norms ** 2 / tf.maximum(gaps, 1e-300), np.inf)


def _row_norms(rows: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.einsum("ij,ij->i", rows, rows))


def _orthonormal_against(w: tf.Tensor, basis: tf.Tensor, norms: tf.Tensor) -> tf.Tensor:
    """Orthonormal rows spanning rows(w) ⊥ rows(basis), dropping dependent
    directions: classical Gram–Schmidt, repeated where it cancelled much of a
    row (below 1/√2 of ``norms``, the rows' norms, which the caller has), then
    the Gram matrix's eigenvectors (SVQB), repeated with the projection where
    the rows were ill conditioned. The Gram matrix also gives the projected
    rows' norms, so that besides the projection only it and the result pass
    over the rows. On the quickstart's 5 × 55,050 residuals TensorFlow's QR took
    4.2 ms, the Gram matrix's eigenvectors 0.57 ms."""
    def project_out(w):
        return w - tf.matmul(tf.matmul(w, basis, transpose_b=True), basis)

    def with_gram(w):
        gram = tf.matmul(w, w, transpose_b=True)
        return w, gram, tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))

    w, gram, after = with_gram(project_out(w))
    w, gram, after = tf.cond(tf.reduce_any(after < norms / np.sqrt(2)), lambda: with_gram(project_out(w)),
                             lambda: (w, gram, after))
    q, well_conditioned = _svqb(w, gram, after)
    return tf.cond(well_conditioned, lambda: q, lambda: _svqb(*with_gram(project_out(q)))[0])


def _svqb(w: tf.Tensor, gram: tf.Tensor, norms: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Orthonormal rows spanning the rows ``w`` (their Gram matrix and norms
    given), from the eigenvectors of the unit rows' Gram matrix; rows below
    ``DROP_BELOW`` × the longest, and directions with singular values below
    ``DEPENDENT`` × the largest, are dropped (the Gram matrix resolves no
    smaller ones in float64). Also whether the kept ones were well
    conditioned enough for the result to be orthonormal to about 1e-12: its
    error is about ε times the squared condition number, so singular values
    within a factor 100."""
    longest = tf.reduce_max(tf.concat([norms, [0.0]], 0))
    unit = tf.where(norms > DROP_BELOW * longest, 1 / tf.maximum(norms, 1e-300), 0.0)  # 0: a dropped row
    values, vectors = tf.linalg.eigh(gram * unit[:, None] * unit[None, :])
    largest = tf.reduce_max(tf.concat([values, [0.0]], 0))
    kept = values > DEPENDENT ** 2 * largest
    values, vectors = tf.boolean_mask(values, kept), tf.boolean_mask(vectors, kept, axis=1)
    q = tf.matmul(tf.transpose(vectors / tf.sqrt(values)) * unit[None, :], w)
    return q, tf.reduce_all(values >= 1e-4 * largest)
