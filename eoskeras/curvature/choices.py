"""The curvature engine's allowed values, free of TensorFlow so that recipes
and the CLI can check them before it loads."""
from __future__ import annotations

from typing import Any

BN_MODES = ("batch", "inference")
HVP_MODES = ("reverse", "forward")
DTYPES = ("float32", "float64")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``allowed``, naming both."""
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}")
