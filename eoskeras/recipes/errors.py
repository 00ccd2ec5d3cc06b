"""The one exception recipe loading and validation raise.

Example:

```python
try:
    recipe = load_recipe("recipes/quickstart.yaml", ["optimizer.lr=-0.1"])
except RecipeError as err:
    print(err)        # optimizer.lr: got -0.1 (a negative number); allowed: a number > 0
    print(err.path)   # optimizer.lr
```
"""
from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any


class _Missing:
    """Marks an error about an absent value (a missing field, a missing file)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# Long values (a pasted list, a paragraph) would drown the message.
_SHOW_LIMIT = 60


def show(value: Any) -> str:
    """Render a user's value the way the message quotes it: repr for text, short."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def kind_of(value: Any) -> str:
    """Name the YAML type of a value in words, e.g. ``kind_of([1]) == "a list"``."""
    if value is None:
        return "null"
    for types, word in _KINDS:
        if isinstance(value, types):
            return word
    return f"a {type(value).__name__}"


# bool before int: YAML's true/false are Python ints too.
_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a bool"),
    (int, "a whole number"),
    (float, "a number"),
    (str, "text"),
    ((list, tuple), "a list"),
    (dict, "a mapping"),
    ((datetime.date, datetime.datetime), "a date"),
    (bytes, "binary data"),
)


class RecipeError(Exception):
    """A recipe, a recipe file or an override is invalid.

    Attributes: ``path`` (the dotted field path, e.g. ``optimizer.lr``, or the
    file name for file-level problems), ``value`` (what was found, or
    ``MISSING``), ``allowed`` (what would have been accepted, in words),
    ``problem`` (what is wrong with the value, in words) and ``errors`` (every
    problem found, this error first; one entry unless several were collected).
    """

    def __init__(self, path: str, value: Any, allowed: str, problem: str = "") -> None:
        self.path = path
        self.value = value
        self.allowed = allowed
        self.problem = problem
        self.errors: tuple[RecipeError, ...] = (self,)
        super().__init__(path, value, allowed, problem)

    @classmethod
    def collect(cls, errors: Sequence[RecipeError]) -> RecipeError:
        """Merge several problems into one error that reports them all.

        The merged error takes ``path``/``value``/``allowed`` from the first.
        """
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        merged = cls(first.path, first.value, first.allowed, first.problem)
        merged.errors = tuple(errors)
        return merged

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep every collected problem when the error crosses a process boundary
        # (a sweep's worker); a single error's `errors` is just itself.
        return _rebuild, (self.args, self.errors if len(self.errors) > 1 else ())

    def _line(self) -> str:
        if self.value is MISSING:
            found = self.problem or "missing"
        elif self.problem:
            found = f"got {show(self.value)} ({self.problem})"
        else:
            found = f"got {show(self.value)}"
        return f"{self.path}: {found}; allowed: {self.allowed}"

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return self._line()
        lines = "\n".join(f"  - {error._line()}" for error in self.errors)
        return f"{len(self.errors)} problems in the recipe:\n{lines}"


def _rebuild(args: tuple[Any, ...], errors: tuple[RecipeError, ...]) -> RecipeError:
    error = RecipeError(*args)
    if errors:
        error.errors = errors
    return error
