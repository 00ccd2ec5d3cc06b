"""Read recipe files (YAML, safe loading only) and write resolved recipes back.

Example:

```python
recipe = load_recipe("recipes/quickstart.yaml", ["optimizer.lr_relative=2"])
(run_dir / "recipe.yaml").write_text(dump_recipe(recipe))
```
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from eoskeras.recipes.bundled import bundled_recipes
from eoskeras.recipes.errors import MISSING, RecipeError, kind_of
from eoskeras.recipes.fields import closest
from eoskeras.recipes.overrides import apply_overrides
from eoskeras.recipes.parse import join, mapping_of, parse_recipe
from eoskeras.recipes.schema import Recipe

_FILE = "a readable recipe file (UTF-8 YAML)"


def load_recipe(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    ``name`` defaults to the file's stem. Overrides are ``"dotted.path=value"``
    strings, the value read as YAML (see ``apply_overrides``).

    Example: ``load_recipe("recipes/quickstart.yaml", ["training.max_steps=50"])``.
    """
    data = read_recipe_file(path)
    data.setdefault("name", Path(path).stem)
    return parse_recipe(apply_overrides(data, overrides))


def dump_recipe(recipe: Recipe) -> str:
    """YAML text of a (resolved) recipe; ``load_recipe`` reads it back unchanged.

    Example: ``Path("runs/x/recipe.yaml").write_text(dump_recipe(recipe))``.
    """
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)


def read_recipe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of a YAML file, or a ``RecipeError`` saying what is wrong.

    Example: ``read_recipe_file("recipes/quickstart.yaml")["model"]["name"]``.
    """
    source = os.fspath(path)
    file = Path(path)
    if file.is_dir():
        raise RecipeError(source, MISSING, _FILE, "a directory, not a file")
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        bundled = bundled_recipes()
        match = closest(file.stem, bundled)
        hint = f"; did you mean the bundled {bundled[match]}?" if match else ""
        raise RecipeError(source, MISSING, _FILE, "no such file" + hint) from None
    except OSError as exc:
        raise RecipeError(source, MISSING, _FILE, f"cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(source, MISSING, _FILE,
                          f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
                          ) from None
    data = _parse_yaml(text, source)
    if data is None:
        raise RecipeError(source, MISSING, mapping_of(Recipe), "empty: no settings")
    if not isinstance(data, dict):
        raise RecipeError(source, data, mapping_of(Recipe), f"{kind_of(data)} at the top level")
    return data


def _parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load``, except that duplicate keys are errors, not silently dropped."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        errors: list[RecipeError] = []
        _find_duplicate_keys(node, "", errors, set())
        if errors:
            raise RecipeError.collect(errors)
        return yaml.SafeLoader("").construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(source, MISSING, "valid YAML",
                          f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        raise RecipeError(source, MISSING, "valid YAML",
                          f"a control character (#x{exc.character:04x}) at offset {exc.position}"
                          ) from None


def _find_duplicate_keys(node: yaml.Node, path: str, errors: list[RecipeError],
                         seen_nodes: set[int]) -> None:
    # Aliases share nodes and may even form cycles: visit each node once.
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        places: dict[str, str] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            mark = key_node.start_mark
            place = f"line {mark.line + 1}, column {mark.column + 1}"
            if isinstance(key_node, yaml.ScalarNode) and key in places:
                errors.append(RecipeError(join(path, key), MISSING, "each key once per mapping",
                                          f"duplicate key at {places[key]} and {place}"))
            places.setdefault(key, place)
            _find_duplicate_keys(value_node, join(path, key), errors, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _find_duplicate_keys(item, path, errors, seen_nodes)
