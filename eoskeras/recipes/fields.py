"""Kinds of recipe settings: each checks one value and returns it typed.

A kind knows what it accepts (``allowed``, in words, for error messages) and
converts a loaded YAML value to its Python type or raises ``RecipeError``.

Example:

```python
Number(low=0, low_open=True).check("optimizer.lr", "1e-3")   # -> 0.001
try:
    Integer(low=1).check("training.max_steps", True)
except RecipeError as err:
    print(err)   # training.max_steps: got True (a bool); allowed: a whole number from 1 to 1,000,000,000
```
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from eoskeras.recipes.errors import RecipeError, kind_of

# Plain decimal numerals only. PyYAML (YAML 1.1) loads `1e-3` as text, so float
# settings must parse it; Python's float() alone would also take "nan",
# "infinity" and "1_0", which no recipe author means.
_NUMERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# Any count in this toolkit above a billion is a typo (or 10**30), not a plan.
MAX_COUNT = 10**9


class Kind(Protocol):
    """What every setting kind provides."""

    @property
    def allowed(self) -> str: ...

    def check(self, path: str, value: Any) -> Any: ...


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option most like ``word`` ignoring case, if any is close."""
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def suggest(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest option, or ``""``."""
    match = closest(word, options)
    return f"; did you mean {match!r}?" if match else ""


def _number(path: str, value: Any, allowed: str) -> int | float:
    """Accept ints, floats and numerals written as text; reject NaN and infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecipeError(path, value, allowed, kind_of(value))
    number: int | float
    if isinstance(value, str):
        text = value.strip()
        if not _NUMERAL.fullmatch(text):
            raise RecipeError(path, value, allowed, "text, not a number")
        number = int(text) if text.lstrip("+-").isdigit() else float(text)
    else:
        number = value
    if isinstance(number, float) and math.isnan(number):
        raise RecipeError(path, value, allowed, "NaN")
    if isinstance(number, float) and math.isinf(number):
        raise RecipeError(path, value, allowed, "infinite, or beyond the floating-point range")
    return number


def _range_problem(number: float, low: float | None, high: float | None,
                   low_open: bool, high_open: bool) -> str:
    """Describe how a number misses its range, or ``""`` when it fits."""
    if low is not None and (number < low or (low_open and number == low)):
        if number < 0 <= low:
            return "a negative number"
        return "zero" if number == 0 else "too small"
    if high is not None and (number > high or (high_open and number == high)):
        return "too large"
    return ""


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


@dataclass(frozen=True)
class Number:
    """A finite float in a range; ints and numerals such as "1e-3" are accepted."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def allowed(self) -> str:
        return f"a number {_interval(self.low, self.high, self.low_open, self.high_open)}"

    def check(self, path: str, value: Any) -> float:
        try:
            number = float(_number(path, value, self.allowed))
        except OverflowError:  # an int too big for a float, e.g. 10**400
            raise RecipeError(path, value, self.allowed,
                              "beyond the floating-point range") from None
        problem = _range_problem(number, self.low, self.high, self.low_open, self.high_open)
        if problem:
            raise RecipeError(path, value, self.allowed, problem)
        return number


@dataclass(frozen=True)
class Integer:
    """A whole number in [low, high]; bools are refused, 1e3 or 1000.0 accepted."""

    low: int = 1
    high: int = MAX_COUNT

    @property
    def allowed(self) -> str:
        return f"a whole number from {self.low:,} to {self.high:,}"

    def check(self, path: str, value: Any) -> int:
        number = _number(path, value, self.allowed)
        if isinstance(number, float):
            if not number.is_integer():
                raise RecipeError(path, value, self.allowed, "not a whole number")
            number = int(number)
        problem = _range_problem(number, self.low, self.high, False, False)
        if problem:
            raise RecipeError(path, value, self.allowed, problem)
        return number


@dataclass(frozen=True)
class Flag:
    """true or false (YAML's yes/no/on/off load as bools too); nothing else."""

    allowed = "true or false"

    def check(self, path: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise RecipeError(path, value, self.allowed, kind_of(value))
        return value


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of words, matched exactly."""

    options: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(self.options)

    def check(self, path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise RecipeError(path, value, self.allowed, kind_of(value))
        if value not in self.options:
            raise RecipeError(path, value, self.allowed,
                              "unknown" + suggest(value, self.options))
        return value


@dataclass(frozen=True)
class Text:
    """A string; with ``pattern``, one that matches it entirely."""

    pattern: re.Pattern[str] | None = None
    rule: str = "any text"

    @property
    def allowed(self) -> str:
        return self.rule

    def check(self, path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise RecipeError(path, value, self.allowed, kind_of(value))
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise RecipeError(path, value, self.allowed, "not of that form")
        return value


@dataclass(frozen=True)
class RelativeDir:
    """A relative path that stays inside the directory it is relative to."""

    allowed = "a relative path below the working directory, without '..'"

    def check(self, path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise RecipeError(path, value, self.allowed, kind_of(value))
        # Check both flavours: a recipe written on Windows must not escape on Linux.
        posix, windows = PurePosixPath(value), PureWindowsPath(value)
        if posix.is_absolute() or windows.drive or windows.root:
            problem = "an absolute path"
        elif ".." in posix.parts or ".." in windows.parts:
            problem = "contains '..'"
        elif value.startswith("~"):
            problem = "starts with '~' (a home directory)"
        elif "\0" in value:
            problem = "contains a NUL character"
        elif str(posix) == ".":
            problem = "the working directory itself"
        else:
            return str(posix)  # normalised, e.g. "runs//a/./b" -> "runs/a/b"
        raise RecipeError(path, value, self.allowed, problem)


@dataclass(frozen=True)
class Nullable:
    """``null`` or a value of the inner kind."""

    inner: Kind

    @property
    def allowed(self) -> str:
        return f"null or {self.inner.allowed}"

    def check(self, path: str, value: Any) -> Any:
        # A bad value reports the inner kind's range: whoever wrote a number
        # wants to know which numbers, not that null would also do.
        return None if value is None else self.inner.check(path, value)
