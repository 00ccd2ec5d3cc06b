"""Load a sweep directory: ``sweep.json`` (or, for an interrupted sweep,
``sweep.csv``) plus each point's threshold and the recipe from its run.

Example:

```python
sweep = load_sweep("runs/cifar10-sweep")
[(p.lr, p.status, p.test_accuracy) for p in sweep.points]
```
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from eoskeras.reports.formatting import as_float
from eoskeras.reports.rundata import (RecipeInfo, ReportError, Result, describe_recipe, load_result, read_json,
                                      read_recipe_mapping)
from eoskeras.runs import layout
from eoskeras.runs.layout import SweepRow


@dataclass(frozen=True)
class SweepPoint(SweepRow):
    """One learning rate of a sweep as recorded; ``threshold`` comes from its result.json."""

    threshold: float | None = None


@dataclass
class SweepData:
    """A sweep's points sorted by learning rate, with the recipe they share."""

    path: Path
    recipe: str
    points: list[SweepPoint]
    info: RecipeInfo
    warnings: list[str]


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _numbers(row: dict[str, Any]) -> dict[str, float | int | None]:
    """The numeric fields of a ``SweepRow`` read from ``row`` (a count only when finite)."""
    numbers: dict[str, float | int | None] = {}
    for name, kind in get_type_hints(SweepRow).items():
        value = as_float(row.get(name))
        if kind == float | None:
            numbers[name] = value
        elif kind == int | None:
            numbers[name] = int(value) if value is not None and math.isfinite(value) else None
    return numbers


def _sweep_rows(path: Path, warnings: list[str]) -> tuple[str | None, list[dict[str, Any]]]:
    data = read_json(path / layout.SWEEP_JSON, warnings)
    if data is not None:
        points = data.get("points")
        return data.get("recipe"), [p for p in points if isinstance(p, dict)] if isinstance(points, list) else []
    if (path / layout.SWEEP_CSV).is_file():
        # sweep.json is written last; an interrupted sweep may only have the CSV.
        warnings.append(f"{layout.SWEEP_JSON}: missing or unreadable; read {layout.SWEEP_CSV}")
        with open(path / layout.SWEEP_CSV, newline="", encoding="utf-8") as handle:
            return None, [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    raise ReportError(f"{path}: not a sweep directory (neither {layout.SWEEP_JSON} nor {layout.SWEEP_CSV})")


def load_sweep(sweep_dir: str | Path) -> SweepData:
    """Read a sweep directory and each point's threshold and recipe.

    Example: ``sweep = load_sweep("runs/sweep"); [p.test_accuracy for p in sweep.points]``.
    """
    path = Path(sweep_dir)
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory")
    warnings: list[str] = []
    recipe_name, rows = _sweep_rows(path, warnings)
    points, recipe = [], {}
    for row in rows:
        run_dir = str(row.get("run_dir") or "")
        result = load_result(path / run_dir, []) if run_dir else Result()
        recipe = recipe or (read_recipe_mapping(path / run_dir, []) if run_dir else {})
        points.append(SweepPoint(**_numbers(row), run_dir=run_dir, status=str(row.get("status") or "unknown"),
                                 stop_reason=row.get("stop_reason"), threshold=result.threshold))
    points.sort(key=lambda p: p.lr if p.lr is not None else math.inf)
    info = describe_recipe({**recipe, "name": recipe_name or recipe.get("name")})
    return SweepData(path=path, recipe=info.name, points=points, info=info, warnings=warnings)
