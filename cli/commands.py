"""What the commands do, once their input is validated (heavy imports here)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from eoskeras.cli.main import INTERRUPTED, console, emit_json, fail
from eoskeras.runs import layout

# Each point is a training run: more than this is a typo, and --grid 1:1e300 would exhaust memory.
MAX_POINTS = 1000


def _report(run_dir: Path, out, plots: bool = True) -> None:
    from eoskeras.reports.plots import plot_run
    from eoskeras.reports.terminal import render_run

    if plots:
        plot_run(run_dir)
    render_run(run_dir, out)


def _require_data(recipe) -> None:
    """Refuse at once, before TensorFlow is imported, when the recipe's data is not on disk."""
    from eoskeras.data import DataSpec, DataUnavailableError, check_available

    d = recipe.data
    try:
        check_available(DataSpec(dataset=d.dataset, data_dir=d.data_dir, download=d.download))
    except DataUnavailableError as err:
        fail(str(err), 1)


def run_training(recipe, out: str | None, *, resume: bool, overwrite: bool, quiet: bool, as_json: bool) -> int:
    _require_data(recipe)
    from eoskeras.data import DataUnavailableError
    from eoskeras.recipes import RecipeError
    from eoskeras.reports.live import RichProgress
    from eoskeras.runs.checkpoint import CheckpointError
    from eoskeras.runs.files import RunWriteError
    from eoskeras.runs.rundir import RunDirectoryError
    from eoskeras.runs.runner import run_recipe
    from eoskeras.runs.strategy import LOST_PEER, StrategyError, is_chief
    from eoskeras.training.full_batch import GhostBatchError

    out_console = console(quiet)
    progress = None if quiet else (lambda total, start: RichProgress(total, initial_step=start, console=out_console))
    run_dir = Path(out or recipe.output.dir)
    try:
        result = run_recipe(recipe, out, resume=resume, overwrite=overwrite, progress=progress)
    except RunWriteError as err:
        fail(f"{err} (no space left, or a file-size limit?); files are replaced whole, so "
             f"{run_dir} keeps its last checkpoint; once there is space, the same command with --resume continues",
             1)
    except (RunDirectoryError, GhostBatchError, StrategyError, RecipeError) as err:
        fail(str(err), 2)
    except (DataUnavailableError, CheckpointError) as err:
        fail(str(err), 1)
    except LOST_PEER as err:
        if recipe.strategy != "multi_worker":
            raise
        fail(f"a worker of this multi-worker run was lost ({type(err).__name__}: {str(err).splitlines()[0]}); "
             f"{run_dir} keeps its last checkpoint: start every worker again with --resume", 1)
    code = INTERRUPTED if result["status"] == "interrupted" else 0
    if not is_chief(recipe.strategy):
        return code  # a non-chief worker: the chief reports
    from eoskeras.reports.plots import plot_run

    plot_run(run_dir)
    if as_json:
        from eoskeras.reports.terminal import run_summary

        emit_json(run_summary(run_dir))
    elif not quiet:
        _report(run_dir, out_console, plots=False)
    return code


def parse_points(lrs: str | None, relatives: str | None, grid: str | None) -> list[tuple[str, float]]:
    """The sweep's points as (recipe field, value) pairs."""
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


def point_overrides(point: tuple[str, float]) -> tuple[str, ...]:
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


def _point_summary(point: tuple[str, float], run_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    from eoskeras.runs.files import read_jsonl

    row: dict[str, Any] = {point[0]: point[1], "run_dir": run_dir.name}
    try:
        result = json.loads((run_dir / layout.RESULT).read_text())
    except (OSError, json.JSONDecodeError):
        return {**row, "status": "failed", "stop_reason": outcome["stderr"].strip().splitlines()[-1:] or ["no result"]}
    curvature = read_jsonl(run_dir / layout.CURVATURE)
    flat = result.get("flatness") or {}
    lr, sharp0 = result.get("lr"), result.get("initial_sharpness")
    row.update(
        lr=lr, lr_relative=result.get("lr_relative"),
        eta_lambda0_over_2=lr * sharp0 / 2 if lr and sharp0 else None,
        status=result.get("status"), stop_reason=result.get("stop_reason"), steps=result.get("stop_step"),
        final_sharpness=flat.get("lambda_max", curvature[-1]["lambda_max"] if curvature else None),
        trace=flat.get("trace"),
        similarity_start_end=curvature[-1]["similarity_first"] if curvature and result.get("status") != "diverged" else None,
        train_accuracy=flat.get("train_accuracy"), test_accuracy=flat.get("test_accuracy"),
    )
    return row


def _write_sweep(sweep_dir: Path, name: str, rows: list[dict[str, Any]]) -> None:
    from eoskeras.runs.files import atomic_write_json, atomic_write_text

    atomic_write_json(sweep_dir / layout.SWEEP_JSON, {"recipe": name, "points": rows})
    columns = ["lr", "lr_relative", "eta_lambda0_over_2", "final_sharpness", "trace", "similarity_start_end",
               "train_accuracy", "test_accuracy", "steps", "status", "stop_reason", "run_dir"]
    atomic_write_text(sweep_dir / layout.SWEEP_CSV, ",".join(columns) + "\n" + "".join(
        ",".join("" if r.get(c) is None else json.dumps(r.get(c)) if isinstance(r.get(c), str) else str(r.get(c))
                 for c in columns) + "\n" for r in rows))


def _pending(point: tuple[str, float], run_dir: Path, status: str) -> dict[str, Any]:
    return {point[0]: point[1], "run_dir": run_dir.name, "status": status}


def _check_same_points(sweep_dir: Path, name: str, dirs: list[Path]) -> None:
    """A resumed sweep has the recipe and the points it started with."""
    from eoskeras.runs.rundir import RunDirectoryError

    try:
        recorded = json.loads((sweep_dir / layout.SWEEP_JSON).read_text())
        same = recorded["recipe"] == name and [p["run_dir"] for p in recorded["points"]] == [d.name for d in dirs]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirectoryError(f"{sweep_dir}: nothing to resume ({layout.SWEEP_JSON} missing or damaged: {err})"
                                ) from err
    if not same:
        raise RunDirectoryError(f"{sweep_dir}: the recipe or the points differ from those the sweep started with "
                                f"({layout.SWEEP_JSON}); resume with the same RECIPE and --lr/--lr-relative/--grid")


def run_sweep(recipe_arg: str, recipes: list, overrides: tuple[str, ...], points: list[tuple[str, float]],
              out: str | None, *, jobs: int, overwrite: bool, resume: bool, quiet: bool, as_json: bool) -> int:
    from eoskeras.runs.rundir import RunDirectoryError, check_inside_working_directory, locked, prepare

    _require_data(recipes[0])  # the points differ only in their learning rate
    sweep_dir = Path(out or f"runs/{recipes[0].name}_sweep")
    name = recipes[0].name
    dirs = [sweep_dir / f"lr_{i:02d}_{value:.4g}" for i, (_, value) in enumerate(points)]
    points_runner = _Points()
    try:
        if out is None:
            check_inside_working_directory(sweep_dir, "the sweep directory runs/<name>_sweep")
        if resume:
            if overwrite:
                raise RunDirectoryError("--resume and --overwrite exclude each other")
            _check_same_points(sweep_dir, name, dirs)
        else:
            prepare(sweep_dir, overwrite=overwrite)
        with locked(sweep_dir):
            rows = [_pending(p, d, "pending") for p, d in zip(points, dirs)]
            _write_sweep(sweep_dir, name, rows)  # a sweep killed at once can still be resumed
            out_console = console(quiet)
            out_console.print(f"sweep of {len(points)} points into {sweep_dir} ({jobs} at a time)")
            write_lock = threading.Lock()

            def one(i: int) -> None:
                outcome = points_runner.run(recipe_arg, overrides + point_overrides(points[i]), dirs[i], resume)
                with write_lock:  # finished points are kept, whatever happens to the others
                    rows[i] = (_pending(points[i], dirs[i], "not run (interrupted)") if outcome["returncode"] is None
                               else _point_summary(points[i], dirs[i], outcome))
                    _write_sweep(sweep_dir, name, rows)

            previous = signal.signal(signal.SIGINT, points_runner.stop)
            try:
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    list(pool.map(one, range(len(points))))
            finally:
                signal.signal(signal.SIGINT, previous)
    except RunDirectoryError as err:
        fail(str(err), 2)
    if points_runner.stopping:
        fail(f"interrupted: the finished points are kept in {sweep_dir / layout.SWEEP_JSON}; the same command with "
             "--resume continues the others", INTERRUPTED)
    from eoskeras.reports.plots import plot_sweep
    from eoskeras.reports.terminal import render_sweep

    plot_sweep(sweep_dir)
    if as_json:
        emit_json(rows)
    elif not quiet:
        render_sweep(sweep_dir, out_console)
    return 0 if all(r["status"] != "failed" for r in rows) else 1


def render_report(path: Path, *, plots: bool, as_json: bool) -> int:
    from eoskeras.reports.rundata import ReportError

    try:
        if (path / layout.SWEEP_JSON).exists():
            from eoskeras.reports.plots import plot_sweep
            from eoskeras.reports.terminal import render_sweep

            if plots:
                plot_sweep(path)
            if as_json:
                emit_json(json.loads((path / layout.SWEEP_JSON).read_text()))
            else:
                render_sweep(path, console())
            return 0
        if as_json:
            from eoskeras.reports.terminal import run_summary

            if plots:
                from eoskeras.reports.plots import plot_run

                plot_run(path)
            emit_json(run_summary(path))
        else:
            _report(path, console(), plots=plots)
    except ReportError as err:
        fail(str(err), 2)
    return 0


def measure_spectrum(source: str | None, **options: Any) -> int:
    from eoskeras.cli.spectrum import spectrum_command

    return spectrum_command(source, **options)

