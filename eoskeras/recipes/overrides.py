"""Command-line overrides: ``"optimizer.lr=0.05"`` applied to raw recipe data.

The path is checked against the schema (an unknown one is an error naming
it); the value is read as YAML (``yaml.safe_load``), so ``true``, ``null``,
``64`` and ``1e-3`` mean what they mean in a recipe file. Values are
validated afterwards, with the rest of the recipe, by ``parse_recipe``.

Example:

```python
apply_overrides({"optimizer": {"lr": 0.1}}, ["optimizer.lr=0.05", "seed=3"])
# -> {"optimizer": {"lr": 0.05}, "seed": 3}
```
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from eoskeras.recipes.errors import MISSING, RecipeError, kind_of
from eoskeras.recipes.fields import suggest
from eoskeras.recipes.options import Options
from eoskeras.recipes.schema import Recipe, fields_of

_FORM = "SECTION.KEY=VALUE, e.g. optimizer.lr=0.05"


def apply_overrides(mapping: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``mapping`` with each ``"dotted.path=value"`` override set.

    Raises ``RecipeError`` listing every malformed override or unknown path.

    Example: ``apply_overrides(data, ["model.options.width=32"])``.
    """
    result = copy.deepcopy(dict(mapping))
    errors: list[RecipeError] = []
    for text in overrides:
        try:
            keys, value = _parse(text)
            _set(result, keys, value)
        except RecipeError as err:
            errors.extend(err.errors)
    if errors:
        raise RecipeError.collect(errors)
    return result


def _parse(text: Any) -> tuple[list[str], Any]:
    if not isinstance(text, str):
        raise RecipeError("override", text, _FORM, kind_of(text))
    key, sep, raw = text.partition("=")
    if not sep:
        raise RecipeError("override", text, _FORM, "no '='")
    keys = key.strip().split(".")
    if not all(keys):
        raise RecipeError("override", text, _FORM, "an empty name in the path")
    _check_path(keys, text)
    try:
        return keys, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise RecipeError(".".join(keys), raw, "a YAML value", "not valid YAML") from None


def _check_path(keys: list[str], text: str) -> None:
    """Walk the schema along ``keys``; the path must end at a setting."""
    section: type = Recipe
    for depth, key in enumerate(keys):
        path, rest = ".".join(keys[: depth + 1]), keys[depth + 1:]
        fields = fields_of(section)
        if key not in fields:
            raise RecipeError(path, MISSING, "one of the keys " + ", ".join(fields),
                              f"unknown setting in override {text!r}" + suggest(key, fields))
        metadata = fields[key].metadata
        if "section" in metadata:
            if not rest:
                raise RecipeError(path, MISSING, f"a setting inside it, e.g. {path}.KEY=VALUE",
                                  f"override {text!r} names a section, not a setting")
            section = metadata["section"]
        elif isinstance(metadata["kind"], Options) and len(rest) == 1:
            return  # model.options.<name>: parse_recipe checks the name
        elif rest:
            raise RecipeError(".".join(keys), MISSING, f"{path} itself (it has no sub-settings)",
                              f"unknown setting in override {text!r}")
        else:
            return


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for depth, key in enumerate(keys[:-1]):
        child = data.get(key)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            raise RecipeError(".".join(keys[: depth + 1]), child, "a mapping", kind_of(child))
        data[key] = child = dict(child)
        data = child
    data[keys[-1]] = value
