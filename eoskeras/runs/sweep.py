"""A learning-rate sweep: one ``eoskeras train`` process per point, summarised
in ``sweep.json`` and ``sweep.csv`` (one ``layout.SweepRow`` per point).

Example:

```python
points = parse_points(None, None, "0.5:8")   # lr_relative 0.5, 0.8, ..., 6.55 (ratio 1.6)
point_overrides(points[0])                   # ('optimizer.lr_relative=0.5', 'optimizer.lr=null')
```
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from eoskeras.runs import layout
from eoskeras.runs.files import atomic_write_json, atomic_write_text, read_jsonl
from eoskeras.runs.rundir import RunDirectoryError, check_inside_working_directory, locked, prepare_run_dir

Point = tuple[str, float]  # (recipe field: lr or lr_relative, value)

# Each point is a training run: more than this is a typo, and --grid 1:1e300 would exhaust memory.
MAX_POINTS = 1000


def parse_points(lrs: str | None, relatives: str | None, grid: str | None) -> list[Point]:
    """The sweep's points from ``--lr``, ``--lr-relative`` or ``--grid`` (exactly one given)."""
    given = [g for g in (lrs, relatives, grid) if g]
    if len(given) != 1:
        raise ValueError("give exactly one of --lr, --lr-relative, --grid")
    if grid:
        parts = grid.split(":")
        try:
            low, high, ratio = (float(v) for v in (parts + ["1.6"])[:3]) if len(parts) in (2, 3) else (0, 0, 0)
        except ValueError:
            low = high = ratio = 0
        if not (0 < low < high and ratio > 1):
            raise ValueError(f"--grid: got {grid!r}; allowed: LOW:HIGH[:RATIO] with 0 < LOW < HIGH and RATIO > 1")
        ratios = np.log(high / low) / np.log(ratio)
        if not ratios < MAX_POINTS:  # not: HIGH may be infinite
            raise ValueError(f"--grid: got {grid!r}, more than {MAX_POINTS:,} points; allowed: at most "
                             f"{MAX_POINTS:,} points (a larger RATIO or a narrower range)")
        count = int(np.floor(ratios + 1e-9)) + 1
        return [("lr_relative", float(f"{low * ratio**i:.6g}")) for i in range(count)]
    key, text = ("lr", lrs) if lrs else ("lr_relative", relatives)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{key.replace('_', '-')}: got {text!r}; allowed: comma-separated numbers") from None
    if not values:
        raise ValueError(f"--{key.replace('_', '-')}: no values given")
    return [(key, v) for v in values]


def point_overrides(point: Point) -> tuple[str, ...]:
    """The recipe overrides of one point: its learning rate set, the other kind cleared."""
    key, value = point
    other = "lr_relative" if key == "lr" else "lr"
    return (f"optimizer.{key}={value!r}", f"optimizer.{other}=null")


class _Points:
    """The sweep's point processes: run one at a time per job, each in its own
    session so that only the sweep forwards a Ctrl-C to them (once)."""

    def __init__(self) -> None:
        self.stopping = False
        self.running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def stop(self, *_: Any) -> None:
        """Ctrl-C: start no further point; the running ones checkpoint and stop (a second one: at once)."""
        self.stopping = True
        with self._lock:
            for process in self.running:
                process.send_signal(signal.SIGINT)

    def run(self, recipe_arg: str, overrides: tuple[str, ...], run_dir: Path, resume: bool) -> dict[str, Any]:
        if resume and _status(run_dir) in layout.FINISHED:
            return {"returncode": 0, "stderr": ""}  # finished before: kept as it is
        continuing = ["--resume"] if resume and (run_dir / layout.CHECKPOINTS / "state.json").is_file() else (
            ["--overwrite"] if resume and run_dir.exists() else [])  # a point killed before its first checkpoint
        command = [sys.executable, "-m", "eoskeras", "train", recipe_arg,
                   *sum((["--set", o] for o in overrides), []), "--out", str(run_dir), "--quiet", *continuing]
        with self._lock:
            if self.stopping:
                return {"returncode": None, "stderr": "not run (interrupted)"}
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
            self.running.add(process)
        stderr = process.communicate()[1]
        with self._lock:
            self.running.discard(process)
        return {"returncode": process.returncode, "stderr": stderr[-2000:]}


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / layout.RESULT).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _pending(point: Point, run_dir: Path, status: str) -> layout.SweepRow:
    return layout.SweepRow(**{point[0]: point[1]}, run_dir=run_dir.name, status=status)


def point_summary(point: Point, run_dir: Path, stderr: str) -> layout.SweepRow:
    """The row of a finished point, from its run directory (``stderr``: why a run without a result failed)."""
    try:
        result = json.loads((run_dir / layout.RESULT).read_text())
    except (OSError, json.JSONDecodeError):
        return dataclasses.replace(_pending(point, run_dir, "failed"),
                                   stop_reason=(stderr.strip().splitlines() or ["no result"])[-1])
    curvature = read_jsonl(run_dir / layout.CURVATURE)
    flat = result.get("flatness") or {}
    lr, sharp0 = result.get("lr"), result.get("initial_sharpness")
    return layout.SweepRow(
        lr=lr, lr_relative=result.get("lr_relative"),
        eta_lambda0_over_2=lr * sharp0 / 2 if lr and sharp0 else None,
        status=result.get("status"), stop_reason=result.get("stop_reason"), steps=result.get("stop_step"),
        final_sharpness=flat.get("lambda_max", curvature[-1]["lambda_max"] if curvature else None),
        trace=flat.get("trace"),
        similarity_start_end=curvature[-1]["similarity_first"] if curvature and result.get("status") != "diverged" else None,
        train_accuracy=flat.get("train_accuracy"), test_accuracy=flat.get("test_accuracy"), run_dir=run_dir.name,
    )


def write_sweep(sweep_dir: Path, name: str, rows: list[layout.SweepRow]) -> None:
    """``sweep.json`` and ``sweep.csv``, each replaced whole."""
    atomic_write_json(sweep_dir / layout.SWEEP_JSON, {"recipe": name, "points": [dataclasses.asdict(r) for r in rows]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f.name for f in dataclasses.fields(layout.SweepRow)])
    writer.writerows(dataclasses.astuple(r) for r in rows)  # None is written as an empty cell
    atomic_write_text(sweep_dir / layout.SWEEP_CSV, buffer.getvalue())


def _check_same_points(sweep_dir: Path, name: str, dirs: list[Path]) -> None:
    """A resumed sweep has the recipe and the points it started with."""
    try:
        recorded = json.loads((sweep_dir / layout.SWEEP_JSON).read_text())
        same = recorded["recipe"] == name and [p["run_dir"] for p in recorded["points"]] == [d.name for d in dirs]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirectoryError(f"{sweep_dir}: nothing to resume ({layout.SWEEP_JSON} missing or damaged: {err})"
                                ) from err
    if not same:
        raise RunDirectoryError(f"{sweep_dir}: the recipe or the points differ from those the sweep started with "
                                f"({layout.SWEEP_JSON}); resume with the same RECIPE and --lr/--lr-relative/--grid")


@dataclass
class SweepOutcome:
    """Where the sweep went, its rows, and whether a Ctrl-C stopped it."""

    directory: Path
    rows: list[layout.SweepRow]
    interrupted: bool


def run_sweep(recipe_arg: str, name: str, overrides: tuple[str, ...], points: list[Point], out: str | None, *,
              jobs: int, overwrite: bool, resume: bool, announce: Callable[[str], None] = lambda _: None
              ) -> SweepOutcome:
    """Train each point of recipe ``recipe_arg`` (named ``name``), ``jobs`` at a
    time, into ``out`` (default ``runs/<name>_sweep``); raises ``RunDirectoryError``.

    A Ctrl-C starts no further point and stops the running ones at their next
    step; finished points are kept and ``resume`` continues the others.
    """
    sweep_dir = Path(out or f"runs/{name}_sweep")
    dirs = [sweep_dir / f"lr_{i:02d}_{value:.4g}" for i, (_, value) in enumerate(points)]
    points_runner = _Points()
    if out is None:
        check_inside_working_directory(sweep_dir, "the sweep directory runs/<name>_sweep")
    if resume:
        if overwrite:
            raise RunDirectoryError("--resume and --overwrite exclude each other")
        _check_same_points(sweep_dir, name, dirs)
    else:
        prepare_run_dir(sweep_dir, overwrite=overwrite)
    with locked(sweep_dir):
        rows = [_pending(p, d, "pending") for p, d in zip(points, dirs)]
        write_sweep(sweep_dir, name, rows)  # a sweep killed at once can still be resumed
        announce(f"sweep of {len(points)} points into {sweep_dir} ({jobs} at a time)")
        write_lock = threading.Lock()

        def one(i: int) -> None:
            outcome = points_runner.run(recipe_arg, overrides + point_overrides(points[i]), dirs[i], resume)
            with write_lock:  # finished points are kept, whatever happens to the others
                rows[i] = (_pending(points[i], dirs[i], "not run (interrupted)") if outcome["returncode"] is None
                           else point_summary(points[i], dirs[i], outcome["stderr"]))
                write_sweep(sweep_dir, name, rows)

        previous = signal.signal(signal.SIGINT, points_runner.stop)
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(one, range(len(points))))
        finally:
            signal.signal(signal.SIGINT, previous)
    return SweepOutcome(sweep_dir, rows, points_runner.stopping)
