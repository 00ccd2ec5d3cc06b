"""What the commands do, once their input is validated (heavy imports here)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from eoskeras.cli.console import INTERRUPTED, console, emit_json, fail, require_data
from eoskeras.runs import layout


def _report(run_dir: Path, out, plots: bool = True) -> None:
    from eoskeras.reports.plots import plot_run
    from eoskeras.reports.terminal import render_run

    if plots:
        plot_run(run_dir)
    render_run(run_dir, out)


def _require_data(recipe) -> None:
    d = recipe.data
    require_data(d.dataset, d.data_dir, d.download)


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


def run_sweep(recipe_arg: str, recipes: list, overrides: tuple[str, ...], points: list[tuple[str, float]],
              out: str | None, *, jobs: int, overwrite: bool, resume: bool, quiet: bool, as_json: bool) -> int:
    from eoskeras.runs.rundir import RunDirectoryError
    from eoskeras.runs.sweep import run_sweep as sweep

    _require_data(recipes[0])  # the points differ only in their learning rate
    out_console = console(quiet)
    try:
        outcome = sweep(recipe_arg, recipes[0].name, overrides, points, out, jobs=jobs, overwrite=overwrite,
                        resume=resume, announce=out_console.print)
    except RunDirectoryError as err:
        fail(str(err), 2)
    if outcome.interrupted:
        fail(f"interrupted: the finished points are kept in {outcome.directory / layout.SWEEP_JSON}; the same "
             "command with --resume continues the others", INTERRUPTED)
    from eoskeras.reports.plots import plot_sweep
    from eoskeras.reports.terminal import render_sweep

    plot_sweep(outcome.directory)
    if as_json:
        emit_json([dataclasses.asdict(r) for r in outcome.rows])
    elif not quiet:
        render_sweep(outcome.directory, out_console)
    return 0 if all(r.status != "failed" for r in outcome.rows) else 1


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
