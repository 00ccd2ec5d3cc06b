"""The generalised Gauss-Newton matrix and the empirical Fisher: siblings of
the Hessian oracle, over the same loss, data, micro-batches and modes.

Example:

```python
oracle = HessianOracle(model, "cross_entropy", x, y)
ggn = GaussNewtonOperator(oracle)                  # Jᵀ H_L J (+ the regulariser's Hessian)
fisher = GaussNewtonOperator(oracle, kind="fisher")  # (1/N) Σ_i g_i g_iᵀ
lanczos(ggn, k=5).eigenvalues, hutchpp_trace(fisher, 99).value
```

Both are products Jᵀ M J computed without forming J, per micro-batch:
J v by forward mode, M (J v) in the output space, then Jᵀ u by reverse mode.

- GGN: J is the Jacobian of the micro-batch's outputs in the weights and M the
  Hessian of its mean loss in the outputs (PSD for cross-entropy and MSE). The
  exact Hessian of the model's regularisation losses is added, so the GGN is
  the Hessian minus the term that weights the outputs' second derivatives by
  the loss gradient; for a model linear in its weights the two are equal.
- Empirical Fisher: J is the Jacobian of the micro-batch's per-example losses
  and M = I / B, i.e. the mean of g_i g_iᵀ over the per-example gradients
  (of the data loss; the regulariser is left out).

In BatchNorm batch mode an example's output depends on its whole
micro-batch, and J is then that micro-batch's joint Jacobian.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from eoskeras.curvature.choices import GAUSS_NEWTON_KINDS as KINDS
from eoskeras.curvature.choices import check_choice
from eoskeras.curvature.objective import CurvatureObjective, dense
from eoskeras.curvature.oracle import HessianOracle


class GaussNewtonOperator:
    """GGN (``kind="ggn"``) or empirical Fisher (``kind="fisher"``) of an
    oracle's loss, as a symmetric PSD operator: ``matvec``, ``dim``,
    ``describe()``; usable by ``lanczos``, ``EigenTracker``, ``hutchpp_trace``.
    Vectors are flat float64 in the order of ``model.trainable_variables``.
    """

    def __init__(self, oracle: HessianOracle | CurvatureObjective, kind: str = "ggn") -> None:
        check_choice("kind", kind, KINDS)
        self.objective = getattr(oracle, "objective", oracle)
        self.kind, self.dim, self.num_hvps = kind, self.objective.dim, 0
        self._product = self.objective.reduction(self.ggn_chunk if kind == "ggn" else self.fisher_chunk,
                                                 lambda _: tf.zeros([self.dim], self.objective.dtype), "vector")

    def describe(self) -> dict[str, Any]:
        return {**self.objective.describe(), "operator": self.kind}

    def matvec(self, v: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """G v (or F v), float64."""
        out = self._product(v, at)
        self.num_hvps += 1
        return out

    # ------------------------------------------------------ one micro-batch
    def ggn_chunk(self, trainable, non_trainable, v_parts, x, y):
        objective = self.objective
        with tf.GradientTape() as vjp_tape:
            vjp_tape.watch(trainable)
            with tf.autodiff.ForwardAccumulator(trainable, v_parts) as acc:
                with tf.GradientTape() as reg_tape:
                    reg_tape.watch(trainable)
                    outputs, _, regularisation = objective.forward(trainable, non_trainable, x, y)
                reg_grad = dense(reg_tape.gradient(regularisation, trainable), trainable)
        zero = tf.UnconnectedGradients.ZERO
        jv = tf.stop_gradient(acc.jvp(outputs, unconnected_gradients=zero))
        reg_hv = acc.jvp(reg_grad, unconnected_gradients=zero)
        # H_L (J v): the Hessian of the micro-batch's mean loss in its outputs.
        z = tf.stop_gradient(outputs)
        with tf.GradientTape() as outer:
            outer.watch(z)
            with tf.GradientTape() as inner:
                inner.watch(z)
                mean = tf.reduce_mean(objective.per_example_loss(y, z))
            along = tf.reduce_sum(inner.gradient(mean, z) * jv)
        u = outer.gradient(along, z)
        jtu = dense(vjp_tape.gradient(outputs, trainable, output_gradients=u), trainable)
        return objective.flatten([a + b for a, b in zip(jtu, reg_hv)])

    def fisher_chunk(self, trainable, non_trainable, v_parts, x, y):
        objective = self.objective
        with tf.GradientTape() as vjp_tape:
            vjp_tape.watch(trainable)
            with tf.autodiff.ForwardAccumulator(trainable, v_parts) as acc:
                _, losses, _ = objective.forward(trainable, non_trainable, x, y)
        # g_i · v for every example, then Σ_i g_i (g_i · v) / B.
        gv = tf.stop_gradient(acc.jvp(losses, unconnected_gradients=tf.UnconnectedGradients.ZERO))
        count = tf.cast(tf.shape(losses)[0], losses.dtype)
        fv = dense(vjp_tape.gradient(losses, trainable, output_gradients=gv / count), trainable)
        return objective.flatten(fv)
