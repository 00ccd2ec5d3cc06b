"""The ``eoskeras`` command line: thin Click commands over the library.

Exit codes: see ``eoskeras.cli.console``. Recipes are validated before
TensorFlow is imported.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from eoskeras.cli.console import INTERRUPTED, console, data_overrides, emit_json, fail
from eoskeras.curvature.choices import OPERATORS
from eoskeras.data.catalog import DATASETS
from eoskeras.runs.choices import STRATEGIES
from eoskeras.training.catalog import LOSSES

# TensorFlow's start-up chatter is silenced only at level 3.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXAMPLES = {
    "train": """
\b
Examples:
  eoskeras train recipes/quickstart.yaml
  eoskeras train quickstart --set training.max_steps=200 --out runs/short
  eoskeras train quickstart --out runs/short --resume""",
    "sweep": """
\b
Examples:
  eoskeras sweep quickstart --lr 0.02,0.05,0.1
  eoskeras sweep quickstart --grid 0.5:8 --jobs 2     # eta/(2/lambda0) from 0.5 to 8, x1.6""",
}


def _stop_at_once(signum: int, frame: Any) -> NoReturn:
    """Ctrl-C outside a training step, or a second one while the first is honoured: leave now.

    Not a KeyboardInterrupt, which can land in an import (then an ImportError
    traceback) or be swallowed. Leaving at any instant is safe: run files are
    replaced atomically or appended one whole line at a time.
    """
    os.write(2, b"\nerror: interrupted: stopped at once; --resume continues from the last checkpoint, "
                b"if one was written\n")
    os._exit(INTERRUPTED)


def load(recipe: str, overrides: tuple[str, ...]):
    """A recipe path or bundled name, validated (exit 2 on any error)."""
    from eoskeras.recipes import RecipeError, bundled_recipes, load_recipe

    path = bundled_recipes().get(recipe, recipe)
    try:
        return load_recipe(path, list(overrides))
    except RecipeError as err:
        fail(str(err), 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="eoskeras")
def main() -> None:
    """eoskeras: train above the stability threshold and measure the landscape."""


set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a recipe field, e.g. optimizer.lr=0.05 (repeatable).")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False),
                               help="Folder of prepared tensorflow-datasets data (sets data.data_dir).")
download_option = click.option("--download", is_flag=True,
                               help="Allow downloading a data set that is not on disk (sets data.download).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress display or report.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


@main.command(epilog=EXAMPLES["train"])
@click.argument("recipe")
@set_option
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default: the recipe's output.dir).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in its directory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="tf.distribute strategy (overrides the recipe's strategy field).")
@data_dir_option
@download_option
@quiet_option
@json_option
def train(recipe: str, overrides: tuple[str, ...], out: str | None, resume: bool, overwrite: bool,
          strategy: str | None, data_dir: str | None, download: bool, quiet: bool, as_json: bool) -> None:
    """Train RECIPE (a YAML file or a bundled recipe name) into a run directory."""
    from eoskeras.cli.commands import run_training

    if strategy:
        overrides += (f"strategy={strategy}",)
    # The runner handles a Ctrl-C during training and then restores this handler for the next one.
    previous = signal.signal(signal.SIGINT, _stop_at_once)
    try:
        code = run_training(load(recipe, overrides + data_overrides(data_dir, download)), out, resume=resume,
                            overwrite=overwrite, quiet=quiet or as_json, as_json=as_json)
    finally:
        signal.signal(signal.SIGINT, previous)
    sys.exit(code)


@main.command(epilog=EXAMPLES["sweep"])
@click.argument("recipe")
@set_option
@click.option("--lr", "lrs", help="Comma-separated absolute learning rates.")
@click.option("--lr-relative", "relatives", help="Comma-separated multiples of the threshold step 2/lambda0.")
@click.option("--grid", help="LOW:HIGH[:RATIO] geometric grid of threshold multiples (ratio 1.6).")
@click.option("--out", type=click.Path(file_okay=False), help="Sweep directory (default: runs/<name>_sweep).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Points run in parallel.")
@click.option("--overwrite", is_flag=True, help="Replace an existing sweep directory.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep: finished points are kept.")
@data_dir_option
@download_option
@quiet_option
@json_option
def sweep(recipe: str, overrides: tuple[str, ...], lrs: str | None, relatives: str | None, grid: str | None,
          out: str | None, jobs: int, overwrite: bool, resume: bool, data_dir: str | None, download: bool,
          quiet: bool, as_json: bool) -> None:
    """Learning-rate sweep of RECIPE: one run per point; diverged points are results."""
    from eoskeras.cli.commands import run_sweep
    from eoskeras.runs.sweep import parse_points, point_overrides

    overrides += data_overrides(data_dir, download)
    try:
        points = parse_points(lrs, relatives, grid)
    except ValueError as err:
        fail(str(err), 2)
    # Every point's recipe is validated before anything runs.
    recipes = [load(recipe, overrides + point_overrides(point)) for point in points]
    sys.exit(run_sweep(recipe, recipes, overrides, points, out, jobs=jobs, overwrite=overwrite, resume=resume,
                       quiet=quiet or as_json, as_json=as_json))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--no-plots", is_flag=True, help="Only the terminal report.")
@json_option
def report(run_dir: str, no_plots: bool, as_json: bool) -> None:
    """Re-render the report and plots of RUN_DIR (a run or a sweep) from its files."""
    from eoskeras.cli.commands import render_report

    sys.exit(render_report(Path(run_dir), plots=not no_plots, as_json=as_json))


@main.command()
@click.argument("source", required=False)
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--trace-hvps", default=60, show_default=True, type=click.IntRange(3, 10_000))
@click.option("--density-steps", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Lanczos steps per SLQ vector for the spectral density (0: none).")
@click.option("--examples", default=1000, show_default=True, type=click.IntRange(1, 10**7),
              help="Examples for the Hessian (a saved model or the demo).")
@click.option("--dataset", default="mnist5k", show_default=True, type=click.Choice(tuple(DATASETS)),
              help="Data for a saved model or the demo.")
@click.option("--loss", default="cross_entropy", show_default=True, type=click.Choice(LOSSES))
@click.option("--operator", default="hessian", show_default=True, type=click.Choice(OPERATORS),
              help="The Hessian, the generalised Gauss-Newton JᵀH_LJ or the empirical Fisher.")
@click.option("--layers", metavar="REGEX", help="Also the spectrum restricted to each layer whose path matches.")
@data_dir_option
@download_option
@json_option
def spectrum(source: str | None, top_k: int, trace_hvps: int, density_steps: int, examples: int, dataset: str,
             loss: str, operator: str, layers: str | None, data_dir: str | None, download: bool,
             as_json: bool) -> None:
    """Hessian (or GGN, Fisher) eigenvalues, trace and density of a run's final
    weights, of a saved .keras model, or (no SOURCE) of a small demo network.
    For a run, the result is also written to RUN_DIR/spectrum_<operator>.json."""
    from eoskeras.cli.spectrum import spectrum_command

    sys.exit(spectrum_command(source, top_k=top_k, trace_hvps=trace_hvps, density_steps=density_steps,
                              examples=examples, dataset=dataset, loss=loss, as_json=as_json,
                              operator=operator, layers=layers, data_dir=data_dir, download=download))


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
              epilog="""
\b
Examples:
  eoskeras launch --workers 2 train quickstart --out runs/mw
  eoskeras launch --workers 2 train quickstart --out runs/mw --resume""")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(2, 64), help="Worker processes.")
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED)
def launch(workers: int, args: tuple[str, ...]) -> None:
    """Run `eoskeras train ...` as a multi-worker run of WORKERS local
    processes (loopback TF_CONFIG, worker 0 the chief and the only writer)."""
    if args[0] != "train":
        fail(f"launch: got {args[0]!r}; allowed: train (e.g. eoskeras launch --workers 2 train quickstart)", 2)
    if any(a == "--strategy" or a.startswith("--strategy=") for a in args):
        fail("launch: --strategy is set by launch (multi_worker); leave it out", 2)
    from eoskeras.cli.launch import launch as run_workers

    sys.exit(run_workers(workers, args))


@main.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--directions", default="random", show_default=True, type=click.Choice(["eig", "random"]),
              help="Top-2 Hessian eigenvectors, or filter-normalised random directions (Li et al. 2018).")
@click.option("--span", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="The slice covers [-SPAN, SPAN] along each direction.")
@click.option("--points", default=21, show_default=True, type=click.IntRange(3, 201), help="Grid points per axis.")
@click.option("--examples", default=1000, show_default=True, type=click.IntRange(1, 10**7),
              help="Examples for a saved model.")
@click.option("--dataset", default="mnist5k", show_default=True, type=click.Choice(tuple(DATASETS)),
              help="Data for a saved model.")
@click.option("--loss", default="cross_entropy", show_default=True, type=click.Choice(LOSSES))
@click.option("--out", type=click.Path(file_okay=False),
              help="Where to write landscape/ and plots/ (default: the run directory, or MODEL_landscape/).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random directions.")
@json_option
def landscape(source: str, directions: str, span: float, points: int, examples: int, dataset: str, loss: str,
              out: str | None, seed: int, as_json: bool) -> None:
    """Loss and accuracy slices (1-D line, 2-D contour) through the weights of
    a run (at its start, middle and end) or of a saved .keras model."""
    from eoskeras.cli.landscape import landscape_command

    sys.exit(landscape_command(source, directions=directions, span=span, points=points, examples=examples,
                               dataset=dataset, loss=loss, out=out, seed=seed, as_json=as_json))


@main.command(name="recipes")
@json_option
def list_recipes(as_json: bool) -> None:
    """List the bundled recipes and what each does."""
    from eoskeras.recipes import RecipeError, bundled_recipes, load_recipe

    rows = []
    for name, path in bundled_recipes().items():
        try:
            r = load_recipe(path)
            rows.append({"name": name, "runtime": r.runtime, "model": r.model.name, "dataset": r.data.dataset,
                         "optimizer": r.optimizer.name, "description": r.description, "path": str(path)})
        except RecipeError as err:
            rows.append({"name": name, "error": str(err), "path": str(path)})
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title="bundled recipes (eoskeras train NAME)")
    for column in ("name", "runtime", "model", "dataset", "optimizer", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[str(row.get(c, row.get("error", ""))) for c in ("name", "runtime", "model", "dataset",
                                                                         "optimizer", "description")])
    console().print(table)
