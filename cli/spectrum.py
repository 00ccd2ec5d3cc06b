"""``eoskeras spectrum``: the Hessian of a run's final weights, of a saved
model, or of a small demo network on the embedded data."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from eoskeras.cli.console import console, data_overrides, emit_json, fail, require_data
from eoskeras.runs import layout


def prepare_run(run_dir: Path, data: tuple[str, ...] = ()):
    """The run's data, network (initial weights) and oracle, rebuilt from its
    recipe (with ``data`` overrides such as ``data.data_dir=DIR``)."""
    from eoskeras.recipes import RecipeError, load_recipe

    try:
        recipe = load_recipe(run_dir / layout.RECIPE, list(data))
    except RecipeError as err:
        fail(f"{run_dir}: {err}", 2)
    require_data(recipe.data.dataset, recipe.data.data_dir, recipe.data.download)
    from eoskeras.runs.runner import prepare

    return prepare(recipe)


def restore_weights(network, prefix: str, run_dir: Path) -> None:
    import tensorflow as tf

    try:
        tf.train.Checkpoint(model=network).restore(prefix).expect_partial()
    # TensorFlow reports a truncated checkpoint file as an IndexError.
    except (IndexError, ValueError, tf.errors.OpError) as err:
        fail(f"{run_dir}: cannot read the weights from {prefix} ({type(err).__name__}: {err})", 1)


def latest_checkpoint(run_dir: Path) -> str:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(run_dir / layout.CHECKPOINTS))
    if latest is None:
        fail(f"{run_dir}: no checkpoint to read the weights from", 1)
    return latest


def _from_run(run_dir: Path, data: tuple[str, ...]):
    prepared = prepare_run(run_dir, data)
    restore_weights(prepared.network, latest_checkpoint(run_dir), run_dir)
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


def with_data(network, dataset: str, examples: int, loss: str, data_dir: str | None = None, download: bool = False):
    from eoskeras.data import DataSpec, load_data
    from eoskeras.data.catalog import DATASETS

    info = DATASETS[dataset]
    if examples > info.train_size:
        fail(f"--examples: got {examples:,}; allowed: at most {info.train_size:,} (the {dataset} training split)", 2)
    input_shape, output_shape = _shapes(network)
    flatten = len(input_shape) == 2
    bundle = load_data(DataSpec(dataset, train_size=examples, flatten=flatten,
                                labels="onehot" if loss == "mse" else "integer", data_dir=data_dir,
                                download=download))
    if input_shape[1:] != bundle.input_shape or output_shape[-1] != info.num_classes:
        fail(f"the model maps {input_shape} to {output_shape}, but --dataset {dataset} has inputs "
             f"{(None, *bundle.input_shape)} and {info.num_classes} classes", 2)
    from eoskeras.curvature.oracle import HessianOracle

    try:
        return HessianOracle(network, loss, bundle.x_train, bundle.y_train)
    except (TypeError, ValueError) as err:  # a model that cannot be measured exactly says why
        fail(f"cannot measure this model: {err}", 2)


def load_saved_model(source: str):
    import keras

    try:
        return keras.saving.load_model(source, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a bad file
        fail(f"{source}: not a loadable Keras model ({type(err).__name__}: {err})", 2)


def _demo(dataset: str, examples: int, loss: str, data_dir: str | None, download: bool):
    from eoskeras.data.catalog import DATASETS
    from eoskeras.models import build_model

    info = DATASETS[dataset]
    return with_data(build_model("mlp3_nh32", info.input_shape, info.num_classes, seed=0), dataset, examples, loss,
                     data_dir, download)


def _measure(oracle, operator: str, layers: str | None, *, top_k: int, trace_hvps: int,
             density_steps: int) -> dict[str, Any]:
    import eoskeras

    op = oracle if operator == "hessian" else eoskeras.GaussNewtonOperator(oracle, operator)
    spectrum = eoskeras.lanczos(op, k=top_k, tol=1e-6, smallest=True, seed=0)
    trace = eoskeras.hutchpp_trace(op, trace_hvps, seed=0)
    result: dict[str, Any] = {"operator": operator, **spectrum.record(), **trace.record()}
    if operator != "hessian":
        hessian = eoskeras.lanczos(oracle, k=1, tol=1e-6, seed=0)
        result.update(hessian_lambda_max=hessian.lambda_max, hessian_hvps=hessian.num_hvps,
                      ratio_to_hessian=spectrum.lambda_max / hessian.lambda_max)
    if density_steps:
        density = eoskeras.spectral_density(op, 4, density_steps, seed=0)
        result["density_nodes_range"] = [float(density.nodes.min()), float(density.nodes.max())]
    if layers is not None:
        try:
            spectra = eoskeras.layer_spectra(op, oracle.model, layers, top_k=top_k, tol=1e-6,
                                             trace_hvps=trace_hvps, seed=0)
        except ValueError as err:
            fail(f"--layers: {err}", 2)
        result["layers"] = [s.record() for s in spectra]
    return result


def spectrum_command(source: str | None, *, top_k: int, trace_hvps: int, density_steps: int, examples: int,
                     dataset: str, loss: str, as_json: bool, operator: str = "hessian",
                     layers: str | None = None, data_dir: str | None = None, download: bool = False) -> int:
    if source is None or not Path(source).is_dir():  # a run's data is checked with its recipe
        require_data(dataset, data_dir, download)
    from eoskeras.data import DataUnavailableError

    try:
        if source is None:
            oracle = _demo(dataset, examples, loss, data_dir, download)
            what = f"demo network mlp3_nh32 at initialisation on {oracle.objective.num_examples} {dataset} examples"
        elif Path(source).is_dir():
            oracle = _from_run(Path(source), data_overrides(data_dir, download))
            what = f"final weights of {source}"
        elif Path(source).is_file():
            oracle = with_data(load_saved_model(source), dataset, examples, loss, data_dir, download)
            what = f"saved model {source} on {oracle.objective.num_examples} {dataset} examples"
        else:
            fail(f"{source}: no such run directory or saved model", 2)
    except DataUnavailableError as err:
        fail(str(err), 1)
    if not math.isfinite(oracle.loss()):
        fail(f"{what}: the loss is not finite there (the run diverged?), so there is no spectrum to measure", 1)
    result = {"source": what, **_measure(oracle, operator, layers, top_k=top_k, trace_hvps=trace_hvps,
                                         density_steps=density_steps)}
    if source is not None and Path(source).is_dir():
        from eoskeras.runs.files import atomic_write_json

        from eoskeras.reports.spectrum_plot import plot_spectrum

        atomic_write_json(Path(source) / layout.spectrum_file(operator), result)
        plot_spectrum(result, Path(source) / layout.PLOTS / f"spectrum_{operator}.png")
    if as_json:
        emit_json(result)
        return 0
    _print(result, what)
    return 0


def _print(result: dict[str, Any], what: str) -> None:
    from rich.table import Table

    from eoskeras.reports.formatting import fmt_pm

    name = {"hessian": "Hessian", "ggn": "Gauss-Newton (GGN)", "fisher": "empirical Fisher"}[result["operator"]]
    table = Table(title=f"{name} spectrum: {what}")
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
    if "hessian_lambda_max" in result:
        out.print(f"{name} lambda_max {result['eigenvalues'][0]:.6g} vs Hessian lambda_max "
                  f"{result['hessian_lambda_max']:.6g}: ratio {result['ratio_to_hessian']:.4f}")
    if "layers" in result:
        layers = Table(title=f"{name} restricted to each layer")
        for column in ("layer", "params", "lambda_max", "trace", "HVPs"):
            layers.add_column(column, justify="left" if column == "layer" else "right", overflow="fold")
        for row in result["layers"]:
            layers.add_row(row["layer"], f"{row['num_params']:,}", f"{row['lambda_max']:.5g}",
                           fmt_pm(row["trace"], row["trace_stderr"], ".5g"), str(row["num_hvps"]))
        out.print(layers)
    if "density_nodes_range" in result:
        lo, hi = result["density_nodes_range"]
        out.print(f"spectral density support (SLQ): [{lo:.4g}, {hi:.4g}]")
    out.print(f"mode: bn={result['bn_mode']} dtype={result['dtype']} examples={result['num_examples']} "
              f"params={result['num_params']} HVPs={result['num_hvps']}")
