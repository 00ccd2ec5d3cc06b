"""How much eigenvectors rotated between two measurements.

Example:

```python
cos = vector_cosines(spec_start.eigenvectors, spec_end.eigenvectors)  # |<u_i, v_i>|
sim = subspace_similarity(spec_start.eigenvectors, spec_end.eigenvectors)
```

``subspace_similarity`` is Wang & Roberts' measure: with principal angles
θ = arccos(σ(U_aᵀ U_b)) between the two k-dimensional subspaces,
cos(‖θ‖₂ / √k): 1 for the same subspace, 0 for orthogonal ones.
"""
from __future__ import annotations

import numpy as np


def _columns(u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    return u.reshape(-1, 1) if u.ndim == 1 else u


def vector_cosines(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|cos| of the angle between matching columns of ``u`` and ``v`` (sign-free)."""
    u, v = _columns(u), _columns(v)
    if u.shape != v.shape:
        raise ValueError(f"eigenvector sets differ in shape: {u.shape} vs {v.shape}")
    return np.abs(np.sum(u * v, axis=0)) / (np.linalg.norm(u, axis=0) * np.linalg.norm(v, axis=0))


def principal_angles(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between span(u) and span(v)."""
    qu, _ = np.linalg.qr(_columns(u))
    qv, _ = np.linalg.qr(_columns(v))
    sigma = np.linalg.svd(qu.T @ qv, compute_uv=False)
    return np.arccos(np.clip(sigma, -1.0, 1.0))


def subspace_similarity(u: np.ndarray, v: np.ndarray) -> float:
    """cos(‖θ‖₂ / √k) over the principal angles θ of two k-dim subspaces."""
    u, v = _columns(u), _columns(v)
    if u.shape != v.shape:
        raise ValueError(f"eigenvector sets differ in shape: {u.shape} vs {v.shape}")
    theta = principal_angles(u, v)
    return float(np.cos(np.linalg.norm(theta) / np.sqrt(u.shape[1])))
