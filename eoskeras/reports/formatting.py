"""Value-or-marker formatting shared by the terminal report and the live display.

Every number a report shows goes through ``fmt`` so that a missing value reads
"—" and a non-finite one (NaN/inf: the run diverged) reads "diverged" — never a
bare ``nan`` a reader could mistake for a measurement.

Example:

```python
fmt(0.8123, percent=True)   # '81.23 %'
fmt(float("nan"))           # 'diverged'
fmt(None)                   # '—'
```
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from rich.text import Text

MISSING = "—"
DIVERGED = "diverged"


def as_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is absent or not a number (bools excluded)."""
    # numbers.Real also covers numpy scalars; bool is a Real too but never a measurement.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def fmt(value: Any, spec: str = ".4g", *, percent: bool = False) -> str:
    """A number as text, "—" when missing, "diverged" when non-finite.

    Example: ``fmt(19.234, ".3g")`` → ``'19.2'``; ``fmt(0.5, percent=True)`` → ``'50.00 %'``.
    """
    x = as_float(value)
    if x is None:
        return MISSING if value is None else str(value)
    if not math.isfinite(x):
        return DIVERGED
    return f"{100 * x:.2f} %" if percent else format(x, spec)


def fmt_pm(value: Any, error: Any, spec: str = ".4g") -> str:
    """``value ± error``; the error is left out when it is missing or not finite
    (a single sample has no standard error; that is no divergence).

    Example: ``fmt_pm(120.0, 3.5)`` → ``'120 ± 3.5'``; ``fmt_pm(120.0, inf)`` → ``'120'``.
    """
    text = fmt(value, spec)
    err = as_float(error)
    if err is None or not math.isfinite(err) or text in (MISSING, DIVERGED):
        return text
    return f"{text} ± {fmt(err, '.2g')}"


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None, so strict JSON can hold it.

    Example: ``json_ready({"trace_stderr": inf})`` → ``{'trace_stderr': None}``.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    return value


def fmt_seconds(seconds: Any) -> str:
    """A duration for humans: ``'12.3 s'``, ``'4 min 05 s'``, ``'2 h 03 min'``."""
    s = as_float(seconds)
    if s is None or not math.isfinite(s):
        return fmt(seconds)
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def styled(text: str, style: str = "") -> Text:
    """``text`` as rich Text, red when it says "diverged" and dim when missing."""
    if text == DIVERGED:
        return Text(text, style="bold red")
    if text == MISSING:
        return Text(text, style="dim")
    return Text(text, style=style)
