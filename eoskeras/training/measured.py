"""The operators whose top eigenvalue an optimiser's threshold applies to:
the Hessian, or P⁻¹H for RMSProp/Adam. ``curvature_operator`` is what the
monitor and the flatness report measure (P: the optimiser's current
preconditioner); ``lr_rule_operator`` is what ``lr_relative`` is resolved
against (P: the stationary denominator at the initial gradient).

Example:

```python
op, preconditioned = curvature_operator(oracle, model.optimizer)   # (oracle, False) for SGD
eoskeras.lanczos(op, k=1).lambda_max     # what SharpnessMonitor compares with the threshold
op, rule = lr_rule_operator(oracle, model.optimizer)   # what lr_relative is relative to, and the rule
```
"""
from __future__ import annotations

import keras

from eoskeras.curvature.operators import PreconditionedOperator, SymmetricOperator
from eoskeras.curvature.oracle import HessianOracle
from eoskeras.training.thresholds import is_adaptive, lr_rule_preconditioner, preconditioner


def curvature_operator(oracle: HessianOracle, optimizer: keras.optimizers.Optimizer | None
                       ) -> tuple[HessianOracle | SymmetricOperator, bool]:
    """The operator whose top eigenvalue ``optimizer``'s threshold applies to, and whether it is preconditioned."""
    if optimizer is None or not is_adaptive(optimizer):
        return oracle, False
    variables = oracle.model.trainable_variables
    gradient = oracle.loss_and_gradient()[1] if int(optimizer.iterations.numpy()) == 0 else None
    return PreconditionedOperator(oracle, preconditioner(optimizer, variables, gradient)), True


# The rule lr_relative follows for adaptive optimisers, recorded in result.json.
ADAPTIVE_LR_RULE = ("lr = lr_relative x threshold_numerator / lambda_max(P^-1 H) at the initial weights, with P the "
                    "optimiser's stationary denominator under the initial full-batch gradient g0: second moment "
                    "v = g0^2, no bias correction (Adam: sqrt(v) + eps; RMSProp: sqrt(v + eps); clipped variants "
                    "clip sqrt(v) first)")
PLAIN_LR_RULE = "lr = lr_relative x threshold_numerator / lambda_max(H) at the initial weights"


def lr_rule_operator(oracle: HessianOracle, optimizer: keras.optimizers.Optimizer
                     ) -> tuple[HessianOracle | SymmetricOperator, str]:
    """The operator whose λ_max ``lr_relative`` is relative to, and the rule in
    words (``PLAIN_LR_RULE`` or ``ADAPTIVE_LR_RULE``) for the run's record.
    ``oracle`` gives the loss's Hessian products and gradient at the initial weights."""
    if not is_adaptive(optimizer):
        return oracle, PLAIN_LR_RULE
    p = lr_rule_preconditioner(optimizer, oracle.loss_and_gradient()[1])
    return PreconditionedOperator(oracle, p), ADAPTIVE_LR_RULE
