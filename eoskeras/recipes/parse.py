"""Turn plain data (a loaded YAML mapping) into a validated ``Recipe``.

Two passes, each reporting every problem it finds at once: first each value
against its field's kind (schema.py tables); then, only if all values are
well-formed, the rules that relate several fields (rules.py), on the recipe
with its derived defaults filled in (resolve.py). Cross-field rules on
malformed values would only add noise.

Example:

```python
recipe = parse_recipe({"name": "demo", "data": {"dataset": "mnist5k"},
                       "model": {"name": "fc-tanh"}, "optimizer": {"lr": "1e-1"}})
recipe.optimizer.lr   # 0.1
```
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eoskeras.recipes.errors import MISSING, RecipeError, kind_of
from eoskeras.recipes.fields import suggest
from eoskeras.recipes.resolve import resolve
from eoskeras.recipes.rules import check_rules
from eoskeras.recipes.schema import REMOVED_KEYS, Recipe, fields_of, is_required

TOP_LEVEL = "(top level)"


def join(path: str, key: str) -> str:
    """``join("optimizer", "lr") == "optimizer.lr"``; the top level has no prefix."""
    return f"{path}.{key}" if path else key


def mapping_of(section: type) -> str:
    """What a section must be, in words: ``a mapping with keys name, lr, ...``."""
    return "a mapping with keys " + ", ".join(fields_of(section))


def parse_recipe(mapping: Mapping[str, Any]) -> Recipe:
    """Validate plain recipe data and return the typed, resolved ``Recipe``.

    Raises ``RecipeError`` listing every problem found.

    Example: ``parse_recipe(yaml.safe_load(text))``.
    """
    errors: list[RecipeError] = []
    recipe = _parse_section(Recipe, mapping, "", errors)
    if errors:
        raise RecipeError.collect(errors)
    recipe = resolve(recipe)
    errors = check_rules(recipe)
    if errors:
        raise RecipeError.collect(errors)
    return recipe


def _parse_section(cls: type, raw: Any, path: str, errors: list[RecipeError]) -> Any:
    """Check one section's keys and values; append problems to ``errors``.

    Returns the section instance, or None when any of it was invalid.
    """
    fields = fields_of(cls)
    if raw is None and path:
        raw = {}  # `flatness:` with nothing under it: all defaults
    if not isinstance(raw, Mapping):
        errors.append(RecipeError(path or TOP_LEVEL, raw, mapping_of(cls), kind_of(raw)))
        return None
    before = len(errors)
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            sub = join(path, str(key))
            problem = ("no longer a setting: " + REMOVED_KEYS[sub] if sub in REMOVED_KEYS
                       else "unknown key" + suggest(str(key), fields))
            errors.append(RecipeError(sub, value, "one of the keys " + ", ".join(fields), problem))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        sub = join(path, name)
        if name not in raw:
            if is_required(field):
                errors.append(RecipeError(sub, MISSING, _allowed(field), "missing"))
            continue
        if "section" in field.metadata:
            values[name] = _parse_section(field.metadata["section"], raw[name], sub, errors)
            continue
        try:
            values[name] = field.metadata["kind"].check(sub, raw[name])
        except RecipeError as err:
            errors.extend(err.errors)
    return cls(**values) if len(errors) == before else None


def _allowed(field: Any) -> str:
    if "section" in field.metadata:
        return mapping_of(field.metadata["section"])
    return field.metadata["kind"].allowed
