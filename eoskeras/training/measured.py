"""The operator whose top eigenvalue an optimiser's threshold applies to,
as the monitor and the flatness report measure it: the Hessian, or P⁻¹H for
RMSProp/Adam with P the optimiser's current preconditioner.

(``thresholds.lr_rule_operator`` is its sibling for resolving ``lr_relative``:
P there is the stationary denominator at the initial gradient.)

Example:

```python
op, preconditioned = curvature_operator(oracle, model.optimizer)   # (oracle, False) for SGD
eoskeras.lanczos(op, k=1).lambda_max     # what SharpnessMonitor compares with the threshold
```
"""
from __future__ import annotations

import keras

from eoskeras.curvature.operators import PreconditionedOperator, SymmetricOperator
from eoskeras.curvature.oracle import HessianOracle
from eoskeras.training.thresholds import is_adaptive, preconditioner


def curvature_operator(oracle: HessianOracle, optimizer: keras.optimizers.Optimizer | None
                       ) -> tuple[HessianOracle | SymmetricOperator, bool]:
    """The operator whose top eigenvalue ``optimizer``'s threshold applies to, and whether it is preconditioned."""
    if optimizer is None or not is_adaptive(optimizer):
        return oracle, False
    variables = oracle.model.trainable_variables
    gradient = oracle.loss_and_gradient()[1] if int(optimizer.iterations.numpy()) == 0 else None
    return PreconditionedOperator(oracle, preconditioner(optimizer, variables, gradient)), True
