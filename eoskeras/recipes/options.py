"""Model options (``model.options``): their kind and the frozen mapping they parse to.

The option names and value types come from ``eoskeras.models.catalog``;
which options a given model accepts is a cross-field rule (rules.py).

Example:

```python
Options().check("model.options", {"width": 64, "activation": "tanh"})
# -> FrozenOptions({'activation': 'tanh', 'width': 64})
```
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from eoskeras.models.catalog import OPTION_TYPES
from eoskeras.recipes.errors import RecipeError, kind_of
from eoskeras.recipes.fields import Choice, Integer, Kind, suggest


class FrozenOptions(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping (model options), sorted by key."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items = dict(sorted(dict(items).items()))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenOptions({self._items!r})"


def _option_kind(spec: object) -> Kind:
    if spec is int:
        return Integer(low=1, high=10**6)
    if isinstance(spec, tuple):
        return Choice(spec)
    raise TypeError(f"models.catalog.OPTION_TYPES: no recipe kind for {spec!r}")


_OPTION_KINDS: dict[str, Kind] = {name: _option_kind(spec) for name, spec in OPTION_TYPES.items()}


@dataclass(frozen=True)
class Options:
    """A mapping of known option names to values of their kind."""

    allowed = "a mapping of model options (" + ", ".join(_OPTION_KINDS) + ")"

    def check(self, path: str, value: Any) -> FrozenOptions:
        if not isinstance(value, Mapping):
            raise RecipeError(path, value, self.allowed, kind_of(value))
        errors, checked = [], {}
        for key, option in value.items():
            kind = _OPTION_KINDS.get(key) if isinstance(key, str) else None
            try:
                if kind is None:
                    raise RecipeError(f"{path}.{key}", option,
                                      "one of the options " + ", ".join(_OPTION_KINDS),
                                      "unknown option" + suggest(str(key), _OPTION_KINDS))
                checked[key] = kind.check(f"{path}.{key}", option)
            except RecipeError as err:
                errors.append(err)
        if errors:
            raise RecipeError.collect(errors)
        return FrozenOptions(checked)
