"""Perturbation-based flatness measures of a loss (first-order, no HVPs).

Example:

```python
rho_sharpness(oracle, rho=0.05)          # SAM: L(w + rho g/|g|) - L(w)
noise_sharpness(oracle, sigma=0.01)      # E[L(w + sigma e)] - L(w), e ~ N(0, I)
```
"""
from __future__ import annotations

import numpy as np

from eoskeras.curvature.oracle import HessianOracle


def rho_sharpness(oracle: HessianOracle, rho: float = 0.05) -> float:
    """Loss increase after one normalised gradient-ascent step of radius rho
    (the inner step of SAM, Foret et al. 2021)."""
    if rho <= 0:
        raise ValueError(f"rho: got {rho}; allowed: a number > 0")
    w = oracle.weights()
    loss, grad = oracle.loss_and_gradient(at=w)
    norm = np.linalg.norm(grad)
    if norm == 0:
        return 0.0
    return oracle.loss(at=w + rho * grad / norm) - loss


def noise_sharpness(oracle: HessianOracle, sigma: float = 0.01, samples: int = 10, *, seed: int = 0) -> tuple[float, float]:
    """Mean loss increase under isotropic Gaussian weight noise of std sigma,
    and its standard error over ``samples`` draws. For small sigma it is
    about sigma² tr(H) / 2."""
    if sigma <= 0 or samples < 1:
        raise ValueError("sigma must be > 0 and samples >= 1")
    rng = np.random.default_rng(seed)
    w = oracle.weights()
    base = oracle.loss(at=w)
    increases = np.array([oracle.loss(at=w + sigma * rng.standard_normal(w.shape)) - base for _ in range(samples)])
    stderr = increases.std(ddof=1) / np.sqrt(samples) if samples > 1 else float("inf")
    return float(increases.mean()), float(stderr)
