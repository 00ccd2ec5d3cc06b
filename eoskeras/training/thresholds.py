"""Stability thresholds of optimisers and the preconditioners they imply.

GD with step η is stable on a quadratic while the sharpness λ_max < 2/η;
heavy-ball momentum β moves that to (2 + 2β)/η and Nesterov to
(2 + 2β)/(η(1 + 2β)). RMSProp and Adam are compared through the
*preconditioned* sharpness λ_max(P⁻¹H), P = diag of their denominator, against
2(1 + β)/η (RMSProp, momentum β) and (2 + 2β₁)/((1 − β₁)η) (Adam).

Example:

```python
threshold = stability_threshold(model.optimizer)             # e.g. 2/eta for GD
p = preconditioner(model.optimizer, model.trainable_variables)  # None for SGD
```
"""
from __future__ import annotations

import keras
import numpy as np

from eoskeras.training.catalog import HYPERPARAMETER_NAMES, OPTIMIZERS, hyperparameters
from eoskeras.training.optimizers import ClippedAdam, ClippedRMSprop, catalog_name, clip_denominator


def current_learning_rate(optimizer: keras.optimizers.Optimizer, step: int | None = None) -> float:
    """The learning rate of step ``step`` (0-based; default: the next step,
    i.e. schedules evaluated at ``iterations``)."""
    schedule = getattr(optimizer, "_learning_rate", None)
    if step is not None and isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(schedule(step)))
    rate = optimizer.learning_rate
    # A constant rate is a Keras variable; read it directly (np.asarray on it warns).
    return float(rate.numpy() if hasattr(rate, "numpy") else keras.ops.convert_to_numpy(rate))


def threshold_numerator(optimizer: keras.optimizers.Optimizer) -> float | None:
    """Threshold × η: the constant c in "stable while sharpness < c/η"."""
    name = catalog_name(optimizer)
    if name is None:
        return None
    # The instance's own hyperparameters (Keras's RMSprop may also carry momentum).
    values = {key: getattr(optimizer, key) for key in HYPERPARAMETER_NAMES if hasattr(optimizer, key)}
    return OPTIMIZERS[name].threshold(values)


def stability_threshold(optimizer: keras.optimizers.Optimizer) -> float | None:
    """The sharpness at which ``optimizer`` at its current step size turns
    unstable on a quadratic; None for optimisers without a known threshold."""
    c = threshold_numerator(optimizer)
    return None if c is None else c / current_learning_rate(optimizer)


def is_adaptive(optimizer: keras.optimizers.Optimizer) -> bool:
    """True when the threshold applies to the preconditioned sharpness."""
    name = catalog_name(optimizer)
    return name is not None and OPTIMIZERS[name].adaptive


def threshold_learning_rate(name: str, sharpness: float, **given: float | str) -> float:
    """The step size at which ``sharpness`` sits exactly at the threshold of
    optimiser ``name`` of ``OPTIMIZERS``, with hyperparameters ``given`` (the
    catalogue's defaults otherwise); for adaptive optimisers ``sharpness`` is
    the preconditioned one."""
    if sharpness <= 0:
        raise ValueError(f"the initial sharpness is {sharpness:.4g}; a threshold step size needs a positive one")
    return OPTIMIZERS[name].threshold(hyperparameters(name, given)) / sharpness


def preconditioner(optimizer: keras.optimizers.Optimizer, variables, gradient: np.ndarray | None = None) -> np.ndarray | None:
    """Diagonal of the preconditioner P of an adaptive optimiser, flat in the
    order of ``variables``; None for non-adaptive ones.

    Before the first step the slots are empty; P is then the one the first
    step will use, computed from ``gradient`` (flat) — required in that case.
    """
    if not is_adaptive(optimizer):
        return None
    if not optimizer.built:
        optimizer.build(variables)
    step = int(optimizer.iterations.numpy())
    if step == 0 and gradient is None:
        raise ValueError("the preconditioner before the first step needs the gradient")
    # Keras keeps second-moment slots in _velocities, indexed per variable.
    slots = [optimizer._velocities[optimizer._get_variable_index(v)].numpy().ravel() for v in variables]
    v = np.concatenate(slots).astype(np.float64)
    if step == 0:
        # The first step's moment: RMSProp has no bias correction, Adam's undoes the (1 − β₂).
        decay = float(optimizer.rho if isinstance(optimizer, keras.optimizers.RMSprop) else optimizer.beta_2)
        step, v = 1, (1 - decay) * np.square(gradient)
    return _denominator(optimizer, v, step)


def _denominator(optimizer: keras.optimizers.Optimizer, v: np.ndarray, step: int | None) -> np.ndarray:
    """What ``optimizer`` divides the (momentum of the) gradient by, given its
    second-moment slot ``v`` after ``step`` updates (None: the stationary
    limit, where Adam's bias corrections are 1)."""
    eps = float(optimizer.epsilon)
    if isinstance(optimizer, keras.optimizers.RMSprop):
        if isinstance(optimizer, ClippedRMSprop):
            return np.asarray(clip_denominator(np.sqrt(v), optimizer.clip_value, optimizer.clip_mode)) + eps
        return np.sqrt(v + eps)
    correction = 1.0 if step is None else 1 - float(optimizer.beta_2) ** step
    v_hat = v / correction
    if isinstance(optimizer, ClippedAdam):
        return np.asarray(clip_denominator(np.sqrt(v_hat), optimizer.clip_value, optimizer.clip_mode)) + eps
    # Keras's Adam adds epsilon before the bias correction of the step size.
    return np.sqrt(v_hat) + eps / np.sqrt(correction)


def lr_rule_preconditioner(optimizer: keras.optimizers.Optimizer, gradient: np.ndarray) -> np.ndarray | None:
    """The preconditioner that ``lr_relative`` is resolved against (None for
    non-adaptive optimisers): see ``ADAPTIVE_LR_RULE``.

    Why the stationary denominator under the initial gradient: the threshold
    (2 + 2β₁)/((1 − β₁)η) is derived for a *frozen* P, i.e. a second moment
    in its steady state, and a gradient held at g₀ drives v̂ to exactly g₀²
    (with bias corrections 1). The first step's P is not that state: for
    RMSProp it is √(1 − ρ) × smaller (no bias correction), and for Adam its
    ε is inflated by 1/√(1 − β₂) ≈ 32, which changes λ_max(P⁻¹H) wherever
    |g₀| is near ε. Running warm-up probe steps instead would make the result
    depend on the learning rate being resolved (circular), cost full-batch
    gradients, and, at a small probe step, converge to this same limit.
    Coordinates whose initial gradient is near zero still get P ≈ ε, as they
    do in Adam's own early steps: that is the optimiser, not the rule.
    Reproduce it with ``lr_rule_preconditioner(optimizer, g0)`` and
    ``PreconditionedOperator`` (``measured.lr_rule_operator`` does).
    """
    if not is_adaptive(optimizer):
        return None
    return _denominator(optimizer, np.square(np.asarray(gradient, dtype=np.float64)), None)
