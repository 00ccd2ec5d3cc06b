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
from eoskeras.curvature.oracle import HessianOracle


def _zeros_for_none(values, like):
    return [tf.zeros_like(t) if v is None else tf.convert_to_tensor(v) for v, t in zip(values, like)]


class GaussNewtonOperator:
    """GGN (``kind="ggn"``) or empirical Fisher (``kind="fisher"``) of an
    oracle's loss, as a symmetric PSD operator: ``matvec``, ``dim``,
    ``describe()``; usable by ``lanczos``, ``EigenTracker``, ``hutchpp_trace``.
    Vectors are flat float64 in the order of ``model.trainable_variables``.
    """

    def __init__(self, oracle: HessianOracle, kind: str = "ggn") -> None:
        if kind not in KINDS:
            raise ValueError(f"kind: got {kind!r}; allowed: {', '.join(KINDS)}")
        self.oracle, self.kind, self.dim = oracle, kind, oracle.dim
        self.num_hvps = 0
        self._chunk = tf.function(self.ggn_chunk if kind == "ggn" else self.fisher_chunk)

    def describe(self) -> dict[str, Any]:
        return {**self.oracle.describe(), "operator": self.kind}

    def matvec(self, v: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """G v (or F v), float64."""
        self.num_hvps += 1
        return self.oracle.sum_over_micro_batches(self._chunk, v, at)

    # ------------------------------------------------------ one micro-batch
    def ggn_chunk(self, trainable, non_trainable, v_parts, x, y, weight):
        oracle = self.oracle
        with tf.GradientTape() as vjp_tape:
            vjp_tape.watch(trainable)
            with tf.autodiff.ForwardAccumulator(trainable, v_parts) as acc:
                with tf.GradientTape() as reg_tape:
                    reg_tape.watch(trainable)
                    outputs, _, regularisation = oracle.forward(trainable, non_trainable, x, y)
                reg_grad = _zeros_for_none(reg_tape.gradient(regularisation, trainable), trainable)
        zero = tf.UnconnectedGradients.ZERO
        jv = tf.stop_gradient(acc.jvp(outputs, unconnected_gradients=zero))
        reg_hv = acc.jvp(reg_grad, unconnected_gradients=zero)
        # H_L (J v): the Hessian of the micro-batch's mean loss in its outputs.
        z = tf.stop_gradient(outputs)
        with tf.GradientTape() as outer:
            outer.watch(z)
            with tf.GradientTape() as inner:
                inner.watch(z)
                mean = tf.reduce_mean(oracle.per_example_loss(y, z))
            along = tf.reduce_sum(inner.gradient(mean, z) * jv)
        u = outer.gradient(along, z)
        jtu = _zeros_for_none(vjp_tape.gradient(outputs, trainable, output_gradients=u), trainable)
        return weight * oracle.flatten_parts([a + b for a, b in zip(jtu, reg_hv)])

    def fisher_chunk(self, trainable, non_trainable, v_parts, x, y, weight):
        oracle = self.oracle
        with tf.GradientTape() as vjp_tape:
            vjp_tape.watch(trainable)
            with tf.autodiff.ForwardAccumulator(trainable, v_parts) as acc:
                _, losses, _ = oracle.forward(trainable, non_trainable, x, y)
        # g_i · v for every example, then Σ_i g_i (g_i · v) / B.
        gv = tf.stop_gradient(acc.jvp(losses, unconnected_gradients=tf.UnconnectedGradients.ZERO))
        count = tf.cast(tf.shape(losses)[0], losses.dtype)
        fv = _zeros_for_none(vjp_tape.gradient(losses, trainable, output_gradients=gv / count), trainable)
        return weight * oracle.flatten_parts(fv)
