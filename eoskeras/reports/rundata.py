"""Load a run directory (see ``eoskeras.runs.layout``) into typed data.

Everything here reads files only — no TensorFlow — and is lenient: missing
optional files, a truncated final JSONL line (a crash mid-write) or a corrupt
``recipe.yaml`` become entries of ``warnings``, not exceptions. Only a
directory that is not a run directory at all raises ``ReportError``.

Example:

```python
run = load_run("runs/cifar10-gd")
run.metrics["loss"], run.curvature["lambda_max"], run.result.status
threshold_crossings(run.curvature["step"], run.curvature["sharpness_ratio"]).up
```
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from eoskeras.reports.formatting import as_float
from eoskeras.runs import layout


class ReportError(Exception):
    """A directory cannot be reported on; the message names the path and why."""


@dataclass(frozen=True)
class Columns:
    """Rows of JSON objects as numeric columns aligned on the row index.

    ``values[key]`` is NaN where a row lacks the key *or* holds NaN;
    ``present[key]`` tells the two apart (a present NaN means divergence).
    Indexing an unknown key gives an all-NaN column, so plots need no checks.
    """

    values: dict[str, np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    length: int = 0

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values.get(key, np.full(self.length, np.nan))

    def __len__(self) -> int:
        return self.length

    def has(self, key: str) -> bool:
        """True when at least one row holds the key."""
        return key in self.present and bool(self.present[key].any())

    def nonfinite(self, key: str) -> np.ndarray:
        """Rows where the key is present but NaN/inf."""
        if key not in self.values:
            return np.zeros(self.length, dtype=bool)
        return self.present[key] & ~np.isfinite(self.values[key])

    def latest(self, key: str, column: str | None = None) -> float | None:
        """The value of the last row holding ``key`` (may be NaN), or None;
        with ``column``, that row's value of ``column`` (e.g. its "step")."""
        if not self.has(key):
            return None
        return float(self[column or key][np.flatnonzero(self.present[key])[-1]])


@dataclass(frozen=True)
class Result:
    """``result.json``; ``status`` is "unknown" when the file is missing or corrupt."""

    status: str = "unknown"
    stop_reason: str | None = None
    stop_step: int | None = None
    wall_seconds: float | None = None
    initial_sharpness: float | None = None  # of the trained loss
    initial_sharpness_inference: float | None = None  # BatchNorm inference mode, for comparison
    lr: float | None = None
    lr_relative: float | None = None
    threshold: float | None = None
    optimizer: str | None = None
    # Kept as the mapping the runner wrote: its keys are many and all optional.
    flatness: dict[str, Any] | None = None


@dataclass(frozen=True)
class Density:
    """``density.npz``: the smoothed spectral density and its quadrature nodes."""

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class RecipeInfo:
    """The recipe's identity as short strings for titles and headers."""

    name: str
    description: str
    model: str
    dataset: str
    optimizer: str
    loss: str

    @property
    def title(self) -> str:
        return f"{self.name}: {self.model} on {self.dataset}, {self.optimizer}"


@dataclass
class RunData:
    """Everything a report needs from one run directory."""

    path: Path
    metrics: Columns
    curvature: Columns
    eigenvalues: np.ndarray  # (measurements, k), NaN-padded, descending per row
    result: Result
    recipe: dict[str, Any]
    environment: dict[str, Any]
    density: Density | None
    warnings: list[str]

    @property
    def info(self) -> RecipeInfo:
        return describe_recipe(self.recipe, self.result.optimizer)

    @property
    def diverged(self) -> bool:
        return self.result.status == "diverged"

    @property
    def unconverged(self) -> np.ndarray:
        """Curvature rows whose eigensolver ran out of HVPs before its tolerance."""
        return self.curvature.present.get("converged", np.zeros(len(self.curvature), bool)) & (
            self.curvature["converged"] == 0)

    @property
    def preconditioned(self) -> bool:
        """True when λ_max is that of P⁻¹H (adaptive optimisers)."""
        return bool(np.nan_to_num(self.curvature["preconditioned"]).any())


@dataclass(frozen=True)
class Crossings:
    """Steps where λ_max/threshold crossed 1, and where it settled afterwards."""

    up: list[int]
    down: list[int]
    median_ratio_after: float | None
    starts_above: bool  # the first measurement was already at or above the threshold


def read_jsonl_or_warn(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of ``path``; unparsable lines are skipped with a warning
    (a report shows what it can; ``runs.files.read_jsonl``, for resuming, raises).

    Example: ``rows = read_jsonl_or_warn(Path("run/metrics.jsonl"), warnings)``.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # accepts NaN/Infinity as Python's json writes them
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif number == len(lines):
            warnings.append(f"{path.name}: skipped the unparsable final line {number} (truncated write?)")
        else:
            warnings.append(f"{path.name}: skipped unparsable line {number}")
    return rows


def to_columns(rows: list[dict[str, Any]]) -> Columns:
    """Numeric columns of ``rows`` (non-numeric values count as absent)."""
    keys = {k for row in rows for k, v in row.items() if as_float(v) is not None or isinstance(v, bool)}
    values, present = {}, {}
    for key in sorted(keys):
        raw = [row.get(key) for row in rows]
        parsed = [float(v) if isinstance(v, bool) else as_float(v) for v in raw]
        present[key] = np.array([x is not None for x in parsed], dtype=bool)
        values[key] = np.array([np.nan if x is None else x for x in parsed], dtype=float)
    return Columns(values, present, len(rows))


def latest_per_step(rows: list[dict[str, Any]], name: str, warnings: list[str]) -> list[dict[str, Any]]:
    """Rows ordered by step, keeping the last row of a step written twice.

    A resumed run re-logs the steps after its last checkpoint; the later rows
    belong to the trajectory that continued.
    """
    by_step: dict[float, dict[str, Any]] = {}
    for row in rows:
        step = as_float(row.get("step"))
        if step is not None:
            by_step[step] = row
    stepless = sum(as_float(row.get("step")) is None for row in rows)
    if stepless:
        warnings.append(f"{name}: skipped {stepless} rows without a numeric step")
    if len(by_step) + stepless < len(rows):
        warnings.append(f"{name}: {len(rows) - stepless - len(by_step)} rows repeat a step (resumed run?); "
                        "kept the latest")
    return [by_step[step] for step in sorted(by_step)]


def nonfinite_warning(rows: list[dict[str, Any]], name: str) -> str | None:
    """A warning naming the first step with NaN/inf values and the keys affected."""
    bad = [(row.get("step"), k) for row in rows for k, v in row.items()
           if (x := as_float(v)) is not None and not math.isfinite(x)]
    if not bad:
        return None
    keys = sorted({k for _, k in bad})
    rows_hit = len({s for s, _ in bad})
    return f"{name}: non-finite values from step {bad[0][0]} on ({', '.join(keys)}; {rows_hit} rows)"


def read_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``; None (with a warning if it exists) when unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        warnings.append(f"{path.name}: unreadable ({error})")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{path.name}: expected a JSON object, found {type(data).__name__}")
        return None
    return data


def load_result(run_dir: Path, warnings: list[str]) -> Result:
    """``result.json`` of ``run_dir`` (a default "unknown" Result when absent)."""
    data = read_json(run_dir / layout.RESULT, warnings)
    if data is None:
        return Result()
    number = {k: as_float(data.get(k)) for k in
              ("wall_seconds", "initial_sharpness", "initial_sharpness_inference", "lr", "lr_relative", "threshold")}
    stop_step = as_float(data.get("stop_step"))
    flatness = data.get("flatness")
    return Result(status=str(data.get("status", "unknown")), stop_reason=data.get("stop_reason"),
                  stop_step=None if stop_step is None or not math.isfinite(stop_step) else int(stop_step),
                  optimizer=data.get("optimizer"), flatness=flatness if isinstance(flatness, dict) else None,
                  **number)


def read_recipe_mapping(run_dir: Path, warnings: list[str]) -> dict[str, Any]:
    """The resolved recipe as plain YAML data, or {} when missing or unreadable
    (unvalidated: ``recipes.load_recipe`` is the validating reader)."""
    path = run_dir / layout.RECIPE
    if not path.is_file():
        return {}
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        warnings.append(f"{layout.RECIPE}: unreadable ({str(error).splitlines()[0]})")
        return {}
    return recipe if isinstance(recipe, dict) else {}


def _named(section: Any) -> tuple[str | None, dict[str, Any]]:
    """(name, options) of a recipe section written as a mapping or a bare name."""
    if isinstance(section, dict):
        return section.get("name"), section
    return (str(section) if section is not None else None), {}


def describe_recipe(recipe: dict[str, Any], optimizer: str | None = None) -> RecipeInfo:
    """Short strings naming the recipe, its model, data, optimiser and loss.

    Example: ``describe_recipe({"name": "r", "model": {"name": "mlp"}}).model`` → ``'mlp'``.
    """
    model, model_section = _named(recipe.get("model"))
    options = model_section.get("options")
    if model and isinstance(options, dict) and options:
        model += "(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"
    data = recipe.get("data") if isinstance(recipe.get("data"), dict) else {}
    dataset = str(data.get("dataset") or "unknown data")
    if data.get("train_size"):
        dataset += f" ({data['train_size']} train)"
    opt_name, _ = _named(recipe.get("optimizer"))
    return RecipeInfo(name=str(recipe.get("name") or "unnamed recipe"),
                      description=str(recipe.get("description") or "").strip(),
                      model=model or "unknown model", dataset=dataset,
                      optimizer=opt_name or optimizer or "unknown optimizer",
                      loss=str(recipe.get("loss") or "—"))


def _load_density(run_dir: Path, warnings: list[str]) -> Density | None:
    path = run_dir / layout.DENSITY
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return Density(*(np.asarray(data[k], dtype=float) for k in ("grid", "density", "nodes", "weights")))
    except (OSError, ValueError, KeyError) as error:
        warnings.append(f"{layout.DENSITY}: unreadable ({error})")
        return None


def _eigenvalue_matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    lists = [[as_float(e) for e in r.get("eigenvalues") or []] for r in rows]
    k = max((len(e) for e in lists), default=0)
    matrix = np.full((len(rows), k), np.nan)
    for i, eigs in enumerate(lists):
        matrix[i, :len(eigs)] = [np.nan if e is None else e for e in eigs]
    return matrix


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory; raises ``ReportError`` when it is not one.

    Example: ``run = load_run("runs/mnist-gd"); run.result.status``.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory")
    if not (path / layout.METRICS_JSONL).is_file() and not (path / layout.RESULT).is_file():
        raise ReportError(f"{path}: not a run directory (neither {layout.METRICS_JSONL} nor {layout.RESULT})")
    warnings: list[str] = []
    metric_rows = latest_per_step(read_jsonl_or_warn(path / layout.METRICS_JSONL, warnings), layout.METRICS_JSONL, warnings)
    curvature_rows = latest_per_step(read_jsonl_or_warn(path / layout.CURVATURE, warnings), layout.CURVATURE, warnings)
    if (message := nonfinite_warning(metric_rows, layout.METRICS_JSONL)) is not None:
        warnings.append(message)
    if not metric_rows:
        warnings.append(f"{layout.METRICS_JSONL}: no rows")
    result = load_result(path, warnings)
    if result.status == "unknown":
        warnings.append(f"{layout.RESULT}: missing or unreadable; the run may still be running or have crashed")
    environment = read_json(path / layout.ENVIRONMENT, warnings) or {}
    return RunData(path=path, metrics=to_columns(metric_rows), curvature=to_columns(curvature_rows),
                   eigenvalues=_eigenvalue_matrix(curvature_rows), result=result,
                   recipe=read_recipe_mapping(path, warnings), environment=environment,
                   density=_load_density(path, warnings), warnings=warnings)


def threshold_crossings(steps: np.ndarray, ratio: np.ndarray) -> Crossings:
    """Steps where ``ratio`` (λ_max/threshold) crossed 1 upward and downward.

    A ratio of exactly 1 counts as at the threshold (above). Non-finite ratios are skipped. Example:
    ``threshold_crossings(np.array([0, 10, 20]), np.array([0.5, 1.1, 0.9])).up`` → ``[10]``.
    """
    keep = np.isfinite(ratio)
    steps, ratio = np.asarray(steps)[keep], np.asarray(ratio)[keep]
    above = ratio >= 1.0
    up = [int(s) for s in steps[1:][above[1:] & ~above[:-1]]]
    down = [int(s) for s in steps[1:][~above[1:] & above[:-1]]]
    first = np.flatnonzero(above)
    median = float(np.median(ratio[first[0]:])) if first.size else None
    return Crossings(up, down, median, bool(above[:1].any()))


def environment_summary(environment: dict[str, Any]) -> str:
    """One line from ``environment.json`` (as ``eoskeras.runs.environment`` writes it).

    Example: ``'python 3.11.9, tensorflow 2.21.0, keras 3.15.0 · CPU:0, GPU:0 · strategy default · seed 0'``.
    """
    packages = environment.get("packages") if isinstance(environment.get("packages"), dict) else {}
    versions = {"python": environment.get("python"), **packages}
    parts = [", ".join(f"{name} {version}" for name, version in versions.items()
                       if version is not None and name not in ("eoskeras", "tensorflow-datasets"))]
    devices = environment.get("devices")
    if isinstance(devices, list) and devices:
        parts.append(", ".join(str(d).removeprefix("/device:") for d in devices))
    for key in ("strategy", "seed"):
        if environment.get(key) is not None:
            parts.append(f"{key} {environment[key]}")
    return " · ".join(p for p in parts if p) or "—"
