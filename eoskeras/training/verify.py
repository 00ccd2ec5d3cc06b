"""The sharpness of the loss a train step optimises, measured from that train
step's own gradient: an independent check of the curvature engine.

The curvature engine differentiates a *twin* of the network twice. This
module touches neither the twin nor second derivatives: it takes central
finite differences of ``FullBatchModel.accumulate``, the very gradient
``train_step`` applies (same chunks, same BatchNorm batch statistics, same
regularisers). If the two agree, the learning rate resolved from the engine's
λ₀ is the multiple of the threshold that training really faces.

Example:

```python
model = FullBatchModel(net, loss="cross_entropy", physical_batch_size=500)
check = train_step_sharpness(model, x_train, y_train)        # ARPACK on the differences
check.lambda_max, check.num_gradients
along = train_step_rayleigh(model, x_train, y_train, top_vector)  # one product
along.lambda_max, along.residual                             # vᵀHv and ‖Hv − λv‖/|λ|
```

Use a float64 model: float32 rounding swamps differences small enough to
step over ReLU and max-pool kinks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy.sparse.linalg import LinearOperator, eigsh

from eoskeras.training.full_batch import FullBatchModel
from eoskeras.training.thresholds import is_adaptive, lr_rule_preconditioner


@dataclass(frozen=True)
class SharpnessCheck:
    """A sharpness from finite differences of the train step's gradient;
    ``residual`` is ‖Hv − λv‖/|λ| along a given vector (None from ARPACK)."""

    lambda_max: float
    num_gradients: int
    residual: float | None = None


class TrainStepHessian:
    """Products with the Hessian of the train step's loss (or with
    P^(-1/2) H P^(-1/2) for an adaptive ``optimizer``, whose eigenvalues are
    those of P⁻¹H, P as ``lr_rule_preconditioner`` defines it from the
    train step's gradient), by central differences of ``model.accumulate``.

    A context manager: the model's weights and BatchNorm statistics are
    restored on exit. Each product takes differences at steps ε and ε/2 of
    ‖εv‖ and shrinks the step until the two agree to ``agreement``: a
    difference that straddles a kink is O(1/step) wrong, and a smaller step
    is unlikely to meet it again.
    """

    def __init__(self, model: FullBatchModel, x, y, *, optimizer=None, epsilon: float = 1e-6,
                 agreement: float = 1e-3) -> None:
        self.model, self.epsilon, self.agreement = model, epsilon, agreement
        self.variables = model.trainable_variables
        self._state = model.network.non_trainable_variables
        self._saved = [v.numpy() for v in self.variables], [v.numpy() for v in self._state]
        self._sizes = [int(np.prod(v.shape)) for v in self.variables]
        self.w0 = np.concatenate([w.ravel() for w in self._saved[0]]).astype(np.float64)
        self.dim = len(self.w0)
        self.num_gradients = 0
        self._gradient = tf.function(lambda: model.accumulate(tf.constant(x), tf.constant(y))[2], autograph=False)
        self._scale = 1.0
        if optimizer is not None and is_adaptive(optimizer):
            self._scale = 1.0 / np.sqrt(lr_rule_preconditioner(optimizer, self.gradient_at(self.w0)))

    def __enter__(self) -> "TrainStepHessian":
        return self

    def __exit__(self, *exc) -> None:
        for var, value in zip(self.variables + self._state, self._saved[0] + self._saved[1]):
            var.assign(value)

    def gradient_at(self, w: np.ndarray) -> np.ndarray:
        self.num_gradients += 1
        for var, part in zip(self.variables, np.split(w, np.cumsum(self._sizes)[:-1])):
            var.assign(part.reshape(var.shape).astype(var.dtype))
        return np.concatenate([np.ravel(g.numpy()) for g in self._gradient()]).astype(np.float64)

    def _difference(self, u: np.ndarray, step: float) -> np.ndarray:
        return (self.gradient_at(self.w0 + step * u) - self.gradient_at(self.w0 - step * u)) / (2 * step)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        u = self._scale * np.ravel(v)
        step = self.epsilon / max(np.linalg.norm(u), 1e-300)
        wide = self._difference(u, step)
        while True:
            narrow = self._difference(u, step / 2)
            if np.linalg.norm(wide - narrow) <= self.agreement * np.linalg.norm(narrow) or step < 1e-6 * self.epsilon:
                return self._scale * narrow
            step /= 16
            wide = self._difference(u, step)


def train_step_sharpness(model: FullBatchModel, x, y, *, optimizer=None, tol: float = 1e-4, seed: int = 0,
                         **differences: float) -> SharpnessCheck:
    """Top eigenvalue of the train step's loss Hessian (P⁻¹H for an adaptive
    ``optimizer``), by SciPy's ARPACK on ``TrainStepHessian`` products."""
    with TrainStepHessian(model, x, y, optimizer=optimizer, **differences) as h:
        n = h.dim
        value = eigsh(LinearOperator((n, n), matvec=h.matvec, dtype=np.float64), k=1, which="LA", tol=tol,
                      v0=np.random.default_rng(seed).standard_normal(n), return_eigenvectors=False)[0]
    return SharpnessCheck(lambda_max=float(value), num_gradients=h.num_gradients)


def train_step_rayleigh(model: FullBatchModel, x, y, vector: np.ndarray, *, optimizer=None,
                        **differences: float) -> SharpnessCheck:
    """vᵀHv/vᵀv of the train step's loss along ``vector`` and the relative
    residual ‖Hv − λv‖/|λ|: a small residual makes λ an eigenvalue of that
    Hessian. One product (four or more gradients)."""
    v = np.asarray(vector, dtype=np.float64) / np.linalg.norm(vector)
    with TrainStepHessian(model, x, y, optimizer=optimizer, **differences) as h:
        hv = h.matvec(v)
    value = float(v @ hv)
    return SharpnessCheck(lambda_max=value, num_gradients=h.num_gradients,
                          residual=float(np.linalg.norm(hv - value * v) / max(abs(value), 1e-300)))
