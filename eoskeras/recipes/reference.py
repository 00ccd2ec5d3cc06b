"""A commented YAML listing of every recipe setting with its default.

Generated from the schema tables, so documentation cannot drift from the code.

Example: ``print(schema_reference())``.
"""
from __future__ import annotations

from typing import Any

import yaml

from eoskeras.recipes.schema import Recipe, fields_of, is_required


def schema_reference() -> str:
    """Every setting as ``key: default``, preceded by a comment saying what it accepts.

    Required settings show ``null`` and say "required". The text is valid YAML.

    Example: ``Path("docs/recipe-schema.yaml").write_text(schema_reference())``.
    """
    return "\n".join(_lines(Recipe, "")) + "\n"


def _lines(section: type, indent: str) -> list[str]:
    lines: list[str] = []
    for name, field in fields_of(section).items():
        doc = field.metadata["doc"]
        prefix = "required; " if is_required(field) else ""
        if "section" in field.metadata:
            lines += [f"{indent}# {prefix}{doc}", f"{indent}{name}:"]
            lines += _lines(field.metadata["section"], indent + "  ")
            continue
        lines.append(f"{indent}# {prefix}{doc}. Allowed: {field.metadata['kind'].allowed}")
        default = None if is_required(field) else _default(field)
        lines.append(f"{indent}{name}: {_scalar(default)}")
    return lines


def _default(field: Any) -> Any:
    return field.default_factory() if callable(field.default_factory) else field.default


def _scalar(value: Any) -> str:
    # safe_dump writes "{}" for an empty mapping and a document end ("...") after
    # a bare scalar; the first line alone is the value.
    return yaml.safe_dump(value if not hasattr(value, "items") else dict(value),
                          default_flow_style=True).splitlines()[0]
