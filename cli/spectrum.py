"""``eoskeras spectrum``: the Hessian of a run's final weights, of a saved
model, or of a small demo network on the embedded data."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from eoskeras.cli.main import console, emit_json, fail
from eoskeras.runs import layout


def _from_run(run_dir: Path):
    import tensorflow as tf

    from eoskeras.recipes import RecipeError, load_recipe
    from eoskeras.runs.runner import prepare

    try:
        recipe = load_recipe(run_dir / layout.RECIPE)
    except RecipeError as err:
        fail(f"{run_dir}: {err}", 2)
    prepared = prepare(recipe)
    latest = tf.train.latest_checkpoint(str(run_dir / layout.CHECKPOINTS))
    if latest is None:
        fail(f"{run_dir}: no checkpoint to read the weights from", 1)
    try:
        tf.train.Checkpoint(model=prepared.network).restore(latest).expect_partial()
    # TensorFlow reports a truncated checkpoint file as an IndexError.
    except (IndexError, ValueError, tf.errors.OpError) as err:
        fail(f"{run_dir}: cannot read the weights from {latest} ({type(err).__name__}: {err})", 1)
    return prepared.oracle  # in the run's own curvature modes


def _shapes(network) -> tuple[tuple, tuple]:
    """Input and output shapes; a subclassed model has them only from its build."""
    import numpy as np

    input_shape = getattr(network, "input_shape", None) or (network.get_build_config() or {}).get("input_shape")
    if input_shape is None or not all(isinstance(d, int) for d in input_shape[1:]):
        fail(f"the model's input shape is unknown ({input_shape}); build it on an input before saving", 2)
    output_shape = getattr(network, "output_shape", None)
    if output_shape is None:
        output_shape = (None, *network(np.zeros((1, *input_shape[1:]), "float32")).shape[1:])
    return tuple(input_shape), tuple(output_shape)


def _with_data(network, dataset: str, examples: int, loss: str):
    from eoskeras.data import DataSpec, load_data
    from eoskeras.data.catalog import DATASETS

    info = DATASETS[dataset]
    if examples > info.train_size:
        fail(f"--examples: got {examples:,}; allowed: at most {info.train_size:,} (the {dataset} training split)", 2)
    input_shape, output_shape = _shapes(network)
    flatten = len(input_shape) == 2
    bundle = load_data(DataSpec(dataset, train_size=examples, flatten=flatten,
                                labels="onehot" if loss == "mse" else "integer"))
    if input_shape[1:] != bundle.input_shape or output_shape[-1] != info.num_classes:
        fail(f"the model maps {input_shape} to {output_shape}, but --dataset {dataset} has inputs "
             f"{(None, *bundle.input_shape)} and {info.num_classes} classes", 2)
    from eoskeras.curvature.oracle import HessianOracle

    try:
        return HessianOracle(network, loss, bundle.x_train, bundle.y_train)
    except (TypeError, ValueError) as err:  # a model that cannot be measured exactly says why
        fail(f"cannot measure this model: {err}", 2)


def _demo(dataset: str, examples: int, loss: str):
    from eoskeras.data.catalog import DATASETS
    from eoskeras.models import build_model

    info = DATASETS[dataset]
    return _with_data(build_model("mlp3_nh32", info.input_shape, info.num_classes, seed=0), dataset, examples, loss)


def spectrum_command(source: str | None, *, top_k: int, trace_hvps: int, density_steps: int, examples: int,
                     dataset: str, loss: str, as_json: bool) -> int:
    import keras

    import eoskeras
    from eoskeras.data import DataUnavailableError

    try:
        if source is None:
            oracle = _demo(dataset, examples, loss)
            what = f"demo network mlp3_nh32 at initialisation on {oracle.num_examples} {dataset} examples"
        elif Path(source).is_dir():
            oracle = _from_run(Path(source))
            what = f"final weights of {source}"
        elif Path(source).is_file():
            try:
                model = keras.saving.load_model(source, compile=False, safe_mode=True)
            except Exception as err:  # Keras raises many types for a bad file
                fail(f"{source}: not a loadable Keras model ({type(err).__name__}: {err})", 2)
            oracle = _with_data(model, dataset, examples, loss)
            what = f"saved model {source} on {oracle.num_examples} {dataset} examples"
        else:
            fail(f"{source}: no such run directory or saved model", 2)
    except DataUnavailableError as err:
        fail(str(err), 1)
    if not math.isfinite(oracle.loss()):
        fail(f"{what}: the loss is not finite there (the run diverged?), so there is no spectrum to measure", 1)
    spectrum = eoskeras.lanczos(oracle, k=top_k, tol=1e-6, smallest=True, seed=0)
    trace = eoskeras.hutchpp_trace(oracle, trace_hvps, seed=0)
    result: dict[str, Any] = {"source": what, **spectrum.record(), **trace.record()}
    if density_steps:
        density = eoskeras.spectral_density(oracle, 4, density_steps, seed=0)
        result["density_nodes_range"] = [float(density.nodes.min()), float(density.nodes.max())]
    if as_json:
        emit_json(result)
        return 0
    _print(result, what)
    return 0


def _print(result: dict[str, Any], what: str) -> None:
    from rich.table import Table

    from eoskeras.reports.formatting import fmt_pm

    table = Table(title=f"Hessian spectrum: {what}")
    table.add_column("#", justify="right")
    table.add_column("eigenvalue", justify="right")
    table.add_column("residual ||Hv - lv||", justify="right")
    for i, (value, residual) in enumerate(zip(result["eigenvalues"], result["residuals"])):
        table.add_row(str(i + 1), f"{value:.6g}", f"{residual:.2e}")
    table.add_row("min", f"{result['smallest']:.6g}", f"{result['smallest_residual']:.2e}")
    out = console()
    out.print(table)
    if not result["converged"]:
        out.print(f"[bold red]NOT CONVERGED: a residual is above tol {result['tol']:g} x max|eigenvalue| after "
                  f"{result['num_hvps']} HVPs; the eigenvalues above are estimates, not converged values[/]")
    out.print(f"trace (Hutch++, {result['trace_hvps']} HVPs): {fmt_pm(result['trace'], result['trace_stderr'], '.6g')}")
    if "density_nodes_range" in result:
        lo, hi = result["density_nodes_range"]
        out.print(f"spectral density support (SLQ): [{lo:.4g}, {hi:.4g}]")
    out.print(f"mode: bn={result['bn_mode']} dtype={result['dtype']} examples={result['num_examples']} "
              f"params={result['num_params']} HVPs={result['num_hvps']}")
