"""The sharpness of the loss a train step optimises, measured from that train
step's own gradient: an independent check of the curvature engine.

The curvature engine differentiates a *twin* of the network twice. This
module touches neither the twin nor second derivatives: it takes central
finite differences of ``FullBatchModel.accumulate``, the very gradient
``train_step`` applies (same chunks, same BatchNorm batch statistics, same
regularisers), and hands them to SciPy's ARPACK. If the two agree, the
learning rate resolved from the engine's λ₀ is the multiple of the threshold
that training really faces.

Example:

```python
model = FullBatchModel(net, loss="cross_entropy", physical_batch_size=500)
check = train_step_sharpness(model, x_train, y_train)
check.lambda_max, check.num_gradients
```
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy.sparse.linalg import LinearOperator, eigsh

from eoskeras.training.full_batch import FullBatchModel
from eoskeras.training.thresholds import is_adaptive, preconditioner


@dataclass(frozen=True)
class SharpnessCheck:
    """λ_max from finite differences of the train step's gradient."""

    lambda_max: float
    num_gradients: int
    epsilon: float


def train_step_sharpness(model: FullBatchModel, x, y, *, optimizer=None, epsilon: float = 1e-6, agreement: float = 1e-3, tol: float = 1e-4,
                         seed: int = 0) -> SharpnessCheck:
    """Top eigenvalue of the train step's loss Hessian, by ARPACK on
    (g(w + εv) − g(w − εv)) / 2ε with g the accumulated full-batch gradient.

    For an adaptive ``optimizer`` (RMSProp, Adam and the clipped variants)
    the operator is P^(-1/2) H P^(-1/2), whose eigenvalues are those of P⁻¹H,
    with P the preconditioner its next step will use (``preconditioner``).
    Each product takes differences at steps ε and ε/2 of ‖εv‖, and shrinks
    the step until the two agree to ``agreement``. Use a float64 model:
    float32 rounding swamps differences this small. The model's weights and
    BatchNorm statistics are restored afterwards.
    """
    variables = model.trainable_variables
    state = model.network.non_trainable_variables
    saved = [v.numpy() for v in variables], [v.numpy() for v in state]
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(s)) for s in shapes]
    w0 = np.concatenate([w.ravel() for w in saved[0]]).astype(np.float64)
    gradient = tf.function(lambda: model.accumulate(tf.constant(x), tf.constant(y))[2])
    count = 0

    def gradient_at(w: np.ndarray) -> np.ndarray:
        nonlocal count
        count += 1
        for var, part, shape in zip(variables, np.split(w, np.cumsum(sizes)[:-1]), shapes):
            var.assign(part.reshape(shape).astype(var.dtype))
        return np.concatenate([np.ravel(g.numpy()) for g in gradient()]).astype(np.float64)

    def difference(u: np.ndarray, step: float) -> np.ndarray:
        return (gradient_at(w0 + step * u) - gradient_at(w0 - step * u)) / (2 * step)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = scale * np.ravel(v)
        step = epsilon / max(np.linalg.norm(u), 1e-300)
        # ReLU and max-pool kinks make the gradient jump; a difference that
        # straddles one is O(1/step) wrong. Two step sizes that disagree
        # reveal it, and a smaller step is then unlikely to meet the kink.
        wide = difference(u, step)
        while True:
            narrow = difference(u, step / 2)
            if np.linalg.norm(wide - narrow) <= agreement * np.linalg.norm(narrow) or step < 1e-6 * epsilon:
                return scale * narrow
            step /= 16
            wide = difference(u, step)

    n = len(w0)
    scale = 1.0
    try:
        if optimizer is not None and is_adaptive(optimizer):
            scale = 1.0 / np.sqrt(preconditioner(optimizer, variables, gradient_at(w0)))
        value = eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=1, which="LA", tol=tol,
                      v0=np.random.default_rng(seed).standard_normal(n), return_eigenvectors=False)[0]
    finally:
        for var, value_ in zip(variables, saved[0]):
            var.assign(value_)
        for var, value_ in zip(state, saved[1]):
            var.assign(value_)
    return SharpnessCheck(lambda_max=float(value), num_gradients=count, epsilon=epsilon)
