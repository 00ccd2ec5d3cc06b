"""The result of an eigen-solve: eigenpairs, residuals and how they were had."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spectrum:
    """Top-k algebraically largest eigenpairs of a symmetric operator.

    ``eigenvalues`` are in descending order and ``eigenvectors[:, i]`` (unit
    norm) belongs to ``eigenvalues[i]``. ``residuals[i]`` is
    ‖H v_i − λ_i v_i‖; the solve stopped when every residual was at most
    ``tol`` × ``scale`` (``scale`` = the largest |Ritz value|), or when its
    budget ran out (``converged`` False). With ``criterion="eigenvalue"``,
    ``tol`` bounds the eigenvalue's error instead, estimated as
    residual² / gap (see ``lanczos``).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    num_hvps: int
    converged: bool
    tol: float
    method: str
    scale: float
    smallest: float | None = None
    smallest_vector: np.ndarray | None = None
    smallest_residual: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    criterion: str = "residual"

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def relative_residuals(self) -> np.ndarray:
        return self.residuals / self.scale

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (no vectors) for logs and run records."""
        out: dict[str, Any] = {
            "eigenvalues": [float(e) for e in self.eigenvalues],
            "residuals": [float(r) for r in self.residuals],
            "num_hvps": int(self.num_hvps),
            "converged": bool(self.converged),
            "tol": float(self.tol),
            "method": self.method,
            "criterion": self.criterion,
        }
        if self.smallest is not None:
            out["smallest"] = float(self.smallest)
            out["smallest_residual"] = float(self.smallest_residual)
        out.update(self.info)
        return out
