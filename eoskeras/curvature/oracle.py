"""The Hessian oracle: Hessian-vector products of a curvature objective.

Example:

```python
oracle = HessianOracle(model, "cross_entropy", x_train[:5000], y_train[:5000],
                       micro_batch_size=1000, bn_mode="batch", dtype="float32")
hv = oracle.hvp(np.random.randn(oracle.dim))   # float64 numpy vector
print(oracle.describe())                       # the mode every number was computed in
```

The data, micro-batches, replicas, twin and vector layout belong to the
``CurvatureObjective`` (``objective.py``); this module holds only the products
computed on one micro-batch: double backprop, forward-over-reverse, a block
of products (or of their quadratic forms vᵀHv) sharing one linearisation, and
Lanczos steps or a tracker's whole block iteration sharing one.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from eoskeras.curvature.choices import HVP_MODES, check_choice
from eoskeras.curvature.held_tracker import HeldTrack, block_eigenpairs
from eoskeras.curvature.objective import CurvatureObjective, dense
from eoskeras.curvature.taylor import Unsupported, on_path, quadratic_form, recorded
from eoskeras.losses import PerExampleLoss

# The most memory a held Lanczos basis and its products may take (float64 rows) if it runs to
# its last step; beyond it, host-driven Lanczos, which keeps the same two.
HELD_BASIS_BYTES = 2 ** 31


class HeldLanczos(NamedTuple):
    """What ``HessianOracle.held_lanczos`` returns: ``lanczos_iteration``'s
    alphas, betas (j − 1), basis rows and last β, the top Ritz vector and H
    times it (from the steps' own products)."""

    alphas: np.ndarray
    betas: np.ndarray
    basis: np.ndarray
    last_beta: float
    ritz: np.ndarray
    product: np.ndarray


class HessianOracle:
    """Full-data-set loss, gradient and Hessian-vector products of a Keras model.

    Args:
        model, loss, x, y: the model, its loss and the fixed data set, e.g.
            the first 5,000 training examples (see ``CurvatureObjective``).
        hvp_mode: ``"reverse"`` (double backprop) or ``"forward"``
            (forward-over-reverse).
        block_size: the most columns ``hvp_block`` computes in one pass
            (bounds the memory its results and held linearisation take).
        **objective_options: ``micro_batch_size``, ``bn_mode`` (``"batch"``:
            the loss full-batch GD descends; ``"inference"``), ``dtype``,
            ``jit_compile`` and ``strategy``, as for ``CurvatureObjective``.

    ``HessianOracle.of(objective)`` builds one on an existing objective, as
    ``GaussNewtonOperator`` and ``landscape_slice`` share one.
    """

    def __init__(self, model: keras.Model, loss: str | keras.losses.Loss | PerExampleLoss, x: Any, y: Any, *,
                 hvp_mode: str = "reverse", block_size: int = 16, **objective_options: Any) -> None:
        self._build(CurvatureObjective(model, loss, x, y, **objective_options), hvp_mode, block_size)

    @classmethod
    def of(cls, objective: CurvatureObjective, hvp_mode: str = "reverse", block_size: int = 16) -> "HessianOracle":
        """The Hessian of an existing objective."""
        oracle = cls.__new__(cls)
        oracle._build(objective, hvp_mode, block_size)
        return oracle

    def _build(self, objective: CurvatureObjective, hvp_mode: str, block_size: int) -> None:
        check_choice("hvp_mode", hvp_mode, HVP_MODES)
        self.objective, self.hvp_mode, self.block_size, self.num_hvps = objective, hvp_mode, block_size, 0
        self.dim = objective.dim
        self._held_lanczos, self._held_track, self._fresh = None, None, True
        self.forms_method: str | None = None  # how quadratic_forms computes, once traced
        vector = lambda _: tf.zeros([self.dim], objective.dtype)  # noqa: E731
        block = lambda v_parts: tf.zeros(tf.stack([tf.shape(v_parts[0])[0], self.dim]), objective.dtype)  # noqa: E731
        self._hvp = objective.reduction(self._reverse if hvp_mode == "reverse" else self._forward, vector, "vector")
        self._hvp_block = objective.reduction(self._linearised_block, block, "block")
        forms = lambda v_parts: tf.zeros(tf.shape(v_parts[0])[:1], tf.float64)  # noqa: E731
        self._quadratic_forms = objective.reduction(self._quadratic_forms_chunk, forms, "block")

    # ----------------------------------------------------------------- public
    @property
    def model(self) -> keras.Model:
        return self.objective.model

    def describe(self) -> dict[str, Any]:
        """The mode the oracle's numbers are computed in, for records."""
        return {**self.objective.describe(), "hvp_mode": self.hvp_mode}

    def weights(self) -> np.ndarray:
        """The model's current trainable weights as a flat float64 vector."""
        return self.objective.weights()

    def loss_and_gradient(self, at: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Mean loss and its gradient (flat float64)."""
        return self.objective.loss_and_gradient(at)

    def loss(self, at: np.ndarray | None = None) -> float:
        """Mean loss over the data set."""
        return self.objective.loss(at)

    def hvp(self, v: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Hessian of the mean loss times ``v`` (flat float64 in, float64 out)."""
        out = self._hvp(v, at)
        self.num_hvps += 1
        return out

    # Solvers in this package call any operator through ``matvec`` (and
    # ``matmat`` for blocks, when the operator has it).
    matvec = hvp

    def hvp_block(self, vectors: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """H V for the columns of ``vectors`` (dim × m), float64. Counts m HVPs.

        In reverse mode each micro-batch's forward pass and gradient are
        computed once for all m columns and held while the m second backward
        passes run, which costs about half of m separate HVPs. Forward mode
        goes through ``hvp`` column by column, and so does one column until the
        block graph is traced: after that a lone column (a tracker's
        one-residual expansion) takes the block graph rather than trace
        ``hvp``'s (the same products; the quickstart's monitor traced both).
        """
        block = np.asarray(vectors, dtype=np.float64)
        lone = block.ndim == 2 and block.shape[1] == 1 and not self._hvp_block.traced.experimental_get_tracing_count()
        if block.ndim == 2 and block.shape[0] == self.dim and (lone or self.hvp_mode == "forward"):
            return np.stack([self.hvp(c, at) for c in block.T], axis=1)
        if block.ndim == 2 and block.shape[1] > self.block_size:
            return np.hstack([self.hvp_block(block[:, i:i + self.block_size], at)
                              for i in range(0, block.shape[1], self.block_size)])
        out = self._hvp_block(block, at).T
        self.num_hvps += block.shape[1]
        return out

    matmat = hvp_block

    def quadratic_forms(self, vectors: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """vᵀHv for each column v of ``vectors`` (dim × m), float64. Counts m HVPs.

        What Hutchinson's trace needs, without H V itself: the second
        derivative of the loss along each column, from first derivatives
        carried forward through the loss's ops and local terms contracted
        with one backward pass (``taylor.py``: on the peer benchmark's MLP
        17.2 ms a vector against 35.0 by double backprop in one run). Where an op has
        no rule, double backprop through the held forward pass and gradient,
        each column's product reduced in the graph; ``forms_method`` (and a
        trace estimate's ``info``) says which. Nothing dim-sized comes back. Columns go
        in chunks of at most ``block_size`` × 16 (the input's memory). In
        forward mode, from ``hvp_block``.
        """
        rows = self.objective.checked_vectors(vectors, "vectors", block=True)
        if self.hvp_mode == "forward":  # its products, as hvp_block takes them
            return np.einsum("ij,ij->i", rows, self.hvp_block(rows.T, at).T)
        chunk = 16 * self.block_size
        out = np.concatenate([self._quadratic_forms(rows[i:i + chunk].T, at) for i in range(0, len(rows), chunk)])
        self.num_hvps += len(rows)
        return out

    def held_lanczos(self, q0: np.ndarray, steps: int, tol: float = 0.0, criterion: str = "residual", *,
                     subset: int | None = None, seed: int = 0, second: float = -np.inf,
                     reorthogonalise: bool = True) -> HeldLanczos | None:
        """Up to ``steps`` single-vector Lanczos steps from ``q0`` in one graph
        call that holds the forward pass and gradient (the linearisation)
        across the steps, as PyHessian holds its autograd graph; each step is
        one backward pass through the gradient. The same iteration as
        ``lanczos_iteration`` (full re-orthogonalisation in float64). With
        ``tol`` > 0 it stops once the top Ritz pair's bound (``criterion``, as
        in ``lanczos``) is at most ``tol`` × max|θ|. It also returns the top
        Ritz vector and H times it, combined from the steps' products (by
        linearity: no further HVP), for a measured residual.

        ``subset`` runs it on the Hessian of that many examples' mean loss
        instead, drawn at random (``seed``), with the same graph; its HVPs are
        not counted in ``num_hvps`` (a subset start, see ``lanczos``).
        ``second``, an estimate of the second-largest eigenvalue, caps the
        Ritz gap the eigenvalue criterion divides by (``error_bounds``).
        ``reorthogonalise=False`` keeps the three-term recurrence alone, for a
        few loose steps (a subset start's, to 1e-2: there the basis loses
        orthogonality only to about ε‖H‖/residual, 1e-14), skipping each
        step's passes over the basis.

        Returns None where nothing can be held: several micro-batches or
        replicas (each would hold its own pass), forward mode, XLA, or a basis
        and its products over ``HELD_BASIS_BYTES``. The solvers call it when it is there.
        """
        objective = self.objective
        steps = min(steps, self.dim)
        if not self._can_hold(steps):
            return None
        if self._held_lanczos is None:
            scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
            signature = objective.signature(tf.TensorSpec([self.dim], tf.float64), scalar(tf.int32),
                                            scalar(tf.float64), scalar(tf.bool), scalar(tf.float64), scalar(tf.bool),
                                            any_batch=True)
            # A partial, whose identity is this oracle's: TensorFlow counts traces per code
            # object, and one call per fresh oracle (a sweep) would read as retracing.
            # Without AutoGraph, as the objective's graphs: it took 0.2-1.0 s off the first call.
            self._held_lanczos = tf.function(functools.partial(self._lanczos_graph), input_signature=signature,
                                             autograph=False)
            self._held_concrete = self._held_lanczos.get_concrete_function()  # binding a call costs more
        trainable, non_trainable = objective.point()
        q0 = np.asarray(q0, np.float64)
        alphas, betas, basis, ritz, product = (t.numpy() for t in self._held_concrete(
            trainable, non_trainable, tf.constant(q0 / np.linalg.norm(q0)), tf.constant(steps),
            tf.constant(tol, tf.float64), tf.constant(criterion == "eigenvalue"), tf.constant(second, tf.float64),
            tf.constant(reorthogonalise), *self._examples(subset, seed)))
        m = len(alphas)
        self.num_hvps += m if subset is None else 0  # products of another (the subset's) Hessian
        breakdown = betas[m - 1] <= 1e-12 * max(np.abs(alphas).max(), betas.max(), 1e-300)
        return HeldLanczos(alphas, betas[:m - 1], basis, 0.0 if breakdown else float(betas[m - 1]), ritz, product)

    def held_track(self, start: np.ndarray, k: int, guard: int, tol: float, max_hvps: int, max_basis: int,
                   scale: np.ndarray | None = None, criterion: str = "residual") -> HeldTrack | None:
        """``tracker._track``'s block iteration from the orthonormal rows
        ``start`` in one graph call that holds the forward pass and gradient
        across all its products (``held_tracker.block_eigenpairs``); as NumPy
        arrays. With ``scale`` (dim positive numbers, D) it solves for D H D
        instead: a ``PreconditionedOperator``'s. ``criterion`` is what ``tol``
        bounds, as in ``lanczos``. Returns None where
        ``held_lanczos`` would for ``max_basis`` steps; the tracker then
        drives the products itself."""
        objective = self.objective
        if not self._can_hold(max_basis):
            return None
        if self._held_track is None:
            scalar = lambda dtype: tf.TensorSpec([], dtype)  # noqa: E731
            signature = objective.signature(tf.TensorSpec([None, self.dim], tf.float64), scalar(tf.int32),
                                            scalar(tf.int32), scalar(tf.float64), scalar(tf.int32),
                                            scalar(tf.int32), tf.TensorSpec([self.dim], tf.float64),
                                            scalar(tf.bool))
            # Its identity is this oracle's, as held_lanczos's graph.
            self._held_track = tf.function(functools.partial(self._track_graph), input_signature=signature,
                                           autograph=False)
            self._held_track_concrete = self._held_track.get_concrete_function()
            self._unit_scale = tf.ones([self.dim], tf.float64)  # the plain Hessian's D, built once
        trainable, non_trainable = objective.point()
        result = HeldTrack(*(t.numpy() for t in self._held_track_concrete(
            trainable, non_trainable, tf.constant(start, tf.float64), tf.constant(k), tf.constant(guard),
            tf.constant(tol, tf.float64), tf.constant(max_hvps), tf.constant(max_basis),
            self._unit_scale if scale is None else tf.constant(scale, tf.float64),
            tf.constant(criterion == "eigenvalue"), *objective.data)))
        self.num_hvps += int(result.count)
        return result

    def linearisation(self, steps: int, subset: int | None = None, seed: int = 0) -> "Linearisation | None":
        """The Hessian at the current weights (of ``subset`` examples, as in
        ``held_lanczos``) as an operator whose products are backward passes
        through one eager tape that holds the forward pass and gradient: what a
        fresh oracle's first held solve of up to ``steps`` HVPs runs on, since
        nothing is traced for it (on the peer benchmark's MLP the held graph's
        trace takes 0.3–0.5 s, and an eager step 1.3–1.5 times a graph one:
        the first solve gains below about 20 steps). None after one on all
        the data (later solves take the graph), and where ``held_lanczos``
        would return None."""
        if not self._fresh or not self._can_hold(min(steps, self.dim)):
            return None
        self._fresh = subset is not None
        return Linearisation(self, self._examples(subset, seed), counted=subset is None)

    def _can_hold(self, steps: int) -> bool:
        objective = self.objective
        return (self.hvp_mode == "reverse" and not objective.jit_compile and objective.one_pass
                and (2 * steps + 1) * self.dim * 8 <= HELD_BASIS_BYTES)

    def _examples(self, subset: int | None, seed: int) -> list[tf.Tensor]:
        """The data (x, y), or ``subset`` examples of it drawn at random (``seed``)."""
        objective = self.objective
        if subset is None:
            return list(objective.data)
        if not 1 <= subset < objective.num_examples:
            raise ValueError(f"start_examples: got {subset}; allowed: 1 <= start_examples < "
                             f"{objective.num_examples} (the oracle's examples)")
        chosen = np.sort(np.random.default_rng(seed).choice(objective.num_examples, subset, replace=False))
        return [tf.gather(t, chosen) for t in objective.data]

    def _track_graph(self, trainable, non_trainable, start, k, guard, tol, max_hvps, max_basis, scale, eigenvalue,
                     x, y):
        objective = self.objective
        held = self._held(trainable, non_trainable, x, y)

        def products(rows):  # D H D times each row
            parts = objective.split(tf.cast(rows * scale, objective.dtype))
            hv = _each_column(parts, objective.dtype, lambda v: objective.flatten(held(v)))
            return tf.cast(hv, tf.float64) * scale
        return block_eigenpairs(products, start, k, guard, tol, max_hvps, max_basis, eigenvalue)

    def _lanczos_graph(self, trainable, non_trainable, q0, steps, tol, eigenvalue, second, reorthogonalise, x, y):
        objective = self.objective
        held = self._held(trainable, non_trainable, x, y)

        def hvp(q):
            return tf.cast(objective.flatten(held(objective.split(tf.cast(q, objective.dtype)))), tf.float64)

        def ritz(a, b):  # eigenpairs of the tridiagonal T (ascending); b holds the last β too
            return tf.linalg.eigh(tf.linalg.diag(a) + tf.linalg.diag(b[:-1], k=1) + tf.linalg.diag(b[:-1], k=-1))

        def norm(w):  # without tf.norm's squared copy of a dim-long vector
            return tf.sqrt(tf.tensordot(w, w, 1))

        def project_out(rows, w):
            return w - tf.linalg.matvec(rows, tf.linalg.matvec(rows, w), transpose_a=True)

        def step(j, basis, products, alphas, betas, last_beta, done):
            q = basis.read(j)
            w = hvp(q)
            alpha = tf.tensordot(q, w, 1)
            products = products.write(j, w)
            w -= alpha * q + last_beta * basis.read(tf.maximum(j - 1, 0))  # the three-term recurrence
            w, beta = tf.cond(reorthogonalise, lambda: reorthogonalised(basis.stack(), w), lambda: with_norm(w))
            alphas, betas = alphas.write(j, alpha), betas.write(j, beta)
            a, b = alphas.stack(), betas.stack()
            breakdown = beta <= 1e-12 * tf.maximum(tf.reduce_max(tf.abs(a)), tf.reduce_max(b))
            theta, s = ritz(a, b)
            estimate = beta * tf.abs(s[-1, -1])  # the top Ritz pair's residual, as error_bounds takes it
            below = tf.concat([[np.inf], theta], 0)[-2]  # one Ritz value has no gap: -inf
            gap = theta[-1] - tf.where(second < theta[-1], tf.maximum(below, second), below)
            bound = tf.where(eigenvalue, tf.where(gap > 0, estimate ** 2 / tf.maximum(gap, 1e-300), np.inf), estimate)
            converged = (tol > 0) & (bound <= tol * tf.reduce_max(tf.abs(theta)))
            return (j + 1, basis.write(j + 1, w / tf.maximum(beta, 1e-300)), products, alphas, betas, beta,
                    breakdown | converged)

        def with_norm(w):
            return w, norm(w)

        def reorthogonalised(rows, w):
            # One classical Gram-Schmidt pass after the three-term recurrence, a second
            # only where the first cancelled much (as ``lanczos_iteration``); w and its norm.
            before = norm(w)
            w, after = with_norm(project_out(rows, w))
            return tf.cond(after < before * np.sqrt(0.5), lambda: with_norm(project_out(rows, w)), lambda: (w, after))

        growing = lambda: tf.TensorArray(tf.float64, size=0, dynamic_size=True, clear_after_read=False)  # noqa: E731
        _, basis, products, alphas, betas, _, _ = tf.while_loop(
            lambda j, *state: (j < steps) & ~state[-1], step,
            (tf.constant(0), growing().write(0, q0), growing(), growing(), growing(), tf.constant(0.0, tf.float64),
             tf.constant(False)))
        a, b = alphas.stack(), betas.stack()
        rows, top = basis.stack()[:alphas.size()], ritz(a, b)[1][:, -1]
        vector, product = (tf.linalg.matvec(r, top, transpose_a=True) for r in (rows, products.stack()))
        scale = norm(vector)
        return a, b, rows, vector / scale, product / scale

    # ------------------------------------------------------ one micro-batch
    def _reverse(self, trainable, non_trainable, v_parts, x, y):
        with tf.GradientTape() as outer:
            outer.watch(trainable)
            grads = self.objective.gradient(trainable, non_trainable, x, y)
            grad_dot_v = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, v_parts)])
        return self.objective.flatten(dense(outer.gradient(grad_dot_v, trainable), trainable))

    def _forward(self, trainable, non_trainable, v_parts, x, y):
        with tf.autodiff.ForwardAccumulator(trainable, v_parts) as acc:
            grads = self.objective.gradient(trainable, non_trainable, x, y)
        return self.objective.flatten(acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO))

    def _linearised_block(self, trainable, non_trainable, v_parts, x, y):
        return self._held_columns(trainable, non_trainable, v_parts, x, y, self.objective.dtype,
                                  lambda hv, v: self.objective.flatten(hv))

    def _quadratic_forms_chunk(self, trainable, non_trainable, v_parts, x, y):
        """vᵀHv for each column v on one micro-batch: Taylor mode through the
        loss's ops where each has a rule, else double backprop
        (``forms_method`` says which, once traced)."""
        with recorded() as ops:
            sources = [tf.identity(t) for t in trainable]  # this graph's own: a micro-batch loop captures the weights
            loss = self.objective.mean_loss(sources, non_trainable, x, y)
        try:
            path = on_path(ops, sources)
        except Unsupported as missing:
            self.forms_method = f"reverse (no forward rule for {missing})"

            def form(hv, v):
                return tf.add_n([tf.reduce_sum(tf.cast(a, tf.float64) * tf.cast(b, tf.float64)) for a, b in zip(hv, v)])
            return self._held_columns(trainable, non_trainable, v_parts, x, y, tf.float64, form)
        self.forms_method = "taylor"
        form = quadratic_form(path, loss)  # its adjoints outside the loop: one backward pass for all columns
        return _each_column(v_parts, tf.float64, lambda v: form(sources, v))

    def _held_columns(self, trainable, non_trainable, v_parts, x, y, dtype, reduce):
        """``reduce(H v, v)`` (per-variable parts) for each column v of the block.
        The tape holds the forward pass and the gradient (the linearisation);
        each column then costs one backward pass through the gradient."""
        held = self._held(trainable, non_trainable, x, y)
        return _each_column(v_parts, dtype, lambda v: reduce(held(v), v))

    def _held(self, trainable, non_trainable, x, y):
        """H times one direction's per-variable parts, as one backward pass
        through a tape that holds the forward pass and the gradient (the
        linearisation) for every call."""
        with tf.GradientTape(persistent=True) as outer:
            outer.watch(trainable)
            grads = self.objective.gradient(trainable, non_trainable, x, y)
        return lambda v: dense(outer.gradient(grads, trainable, output_gradients=v), trainable)


def _each_column(v_parts, dtype, fn):
    """``fn`` of each column's per-variable parts (a block's parts lead with the column axis), stacked."""
    columns = tf.shape(v_parts[0])[0]

    def body(i, out):
        # tf.gather, not part[i]: one op where slicing builds four per part. On the peer MLP's
        # quadratic forms that took 11-15 ms off the trace and 8-26 ms off the first call.
        return i + 1, out.write(i, fn([tf.gather(part, i) for part in v_parts]))
    return tf.while_loop(lambda i, _: i < columns, body, (tf.constant(0), tf.TensorArray(dtype, size=columns)))[1].stack()


class Linearisation:
    """An oracle's Hessian at one point, of one micro-batch, as an operator:
    one eager persistent tape holds the forward pass and gradient, and each
    product is one backward pass through it (``HessianOracle.linearisation``).
    Counts its products in the oracle's ``num_hvps`` when ``counted``."""

    def __init__(self, oracle: HessianOracle, data: list[tf.Tensor], counted: bool) -> None:
        objective = oracle.objective
        self.dim, self._oracle, self._counted = oracle.dim, oracle, counted
        self._trainable, non_trainable = objective.point()
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(self._trainable)
            self._grads = objective.gradient(self._trainable, non_trainable, *data)
        self._tape = tape

    def describe(self) -> dict[str, Any]:
        return self._oracle.describe()

    def matmat(self, block: np.ndarray) -> np.ndarray:
        """H times each column of ``block`` (dim × m), float64."""
        objective = self._oracle.objective
        columns = []
        for v in np.asarray(block, np.float64).T:
            parts = objective.split(tf.constant(v, objective.dtype))
            hv = self._tape.gradient(self._grads, self._trainable, output_gradients=parts,
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
            columns.append(objective.flatten(dense(hv, self._trainable)).numpy())
        if self._counted:
            self._oracle.num_hvps += len(columns)
        return np.stack(columns, axis=1).astype(np.float64)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self.matmat(np.asarray(v)[:, None])[:, 0]
