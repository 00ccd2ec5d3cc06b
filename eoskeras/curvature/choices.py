"""Allowed values of the curvature engine's options (no TensorFlow import).

The objective and the operators check their arguments against these, and
recipe validation and the command line offer them before TensorFlow is loaded.
"""
from __future__ import annotations

from typing import Any

BN_MODES: tuple[str, ...] = ("batch", "inference")
HVP_MODES: tuple[str, ...] = ("reverse", "forward")
DTYPES: tuple[str, ...] = ("float32", "float64")
# The curvature matrices besides the Hessian (GaussNewtonOperator's kinds).
GAUSS_NEWTON_KINDS: tuple[str, ...] = ("ggn", "fisher")
OPERATORS: tuple[str, ...] = ("hessian", *GAUSS_NEWTON_KINDS)
# What an eigensolver's tol bounds: the residual ‖Hv − θv‖, or the eigenvalue's error.
CRITERIA: tuple[str, ...] = ("residual", "eigenvalue")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``allowed``, naming both."""
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}")
