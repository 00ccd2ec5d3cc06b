"""Rich terminal reports of a run or a sweep, and a JSON-ready run summary.

Example:

```python
from rich.console import Console
render_run("runs/cifar10-gd", Console())
render_sweep("runs/cifar10-sweep", Console())
json.dumps(run_summary("runs/cifar10-gd"), allow_nan=False)
```
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from eoskeras.reports.formatting import MISSING, as_float, fmt, fmt_pm, fmt_seconds, json_ready, styled
from eoskeras.reports.rundata import RunData, environment_summary, load_run, threshold_crossings
from eoskeras.reports.sweepdata import SweepData, load_sweep

STATUS_STYLES = {"goal_reached": "green", "max_steps": "cyan", "stalled": "bold yellow", "diverged": "bold red",
                 "interrupted": "yellow", "running": "cyan", "completed": "green"}  # "completed": runs before 0.2
MAX_LISTED_STEPS = 8


def _status(status: str, stop_reason: str | None = None, stop_step: int | None = None) -> Text:
    text = Text(status, style=STATUS_STYLES.get(status, "magenta"))
    if stop_reason:
        text.append(f" — {stop_reason}")
    if stop_step is not None:
        text.append(f" (step {stop_step})")
    return text


def _section(title: str, body: Table | Text, note: str | None = None) -> Group:
    """A bold heading above ``body`` (a table title would wrap at the table's width)."""
    parts: list[Any] = [Text(title, style="bold"), body]
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def _steps_text(steps: list[int]) -> str:
    if not steps:
        return "never"
    shown = ", ".join(str(s) for s in steps[:MAX_LISTED_STEPS])
    more = len(steps) - MAX_LISTED_STEPS
    return shown + (f" … and {more} more" if more > 0 else "")


def _lr_text(run: RunData) -> str:
    """The learning rate and how the runner resolved it."""
    r = run.result
    optimizer = run.recipe.get("optimizer")
    lr = r.lr if r.lr is not None else (optimizer.get("lr") if isinstance(optimizer, dict) else None)
    if r.lr_relative is not None:
        text = (f"η = {fmt(lr)} = {fmt(r.lr_relative, '.3g')} × the threshold step size of the initial "
                f"sharpness λ₀ = {fmt(r.initial_sharpness)} (the trained loss)")
        if r.initial_sharpness_inference is not None:
            text += f"; BatchNorm inference mode λ₀ = {fmt(r.initial_sharpness_inference)}, not used"
        return text
    return f"η = {fmt(lr)}" + (" (set in the recipe)" if lr is not None else "")


def _header(run: RunData) -> Panel:
    info, r = run.info, run.result
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, Any]] = [
        ("model", info.model), ("data", info.dataset), ("loss", info.loss), ("optimizer", info.optimizer),
        ("learning rate", _lr_text(run)), ("status", _status(r.status, r.stop_reason, r.stop_step)),
        ("wall time", fmt_seconds(r.wall_seconds)), ("environment", environment_summary(run.environment)),
        ("run directory", str(run.path)),
    ]
    for label, value in rows:
        grid.add_row(label, value)
    title = info.name + (f" — {info.description}" if info.description else "")
    return Panel(grid, title=Text(title, style="bold"), title_align="left")


def _accuracy_table(run: RunData) -> Group | Text:
    """Train/test loss and accuracy with their gaps: the final evaluation, else the last logged step."""
    flat = run.result.flatness
    if flat is not None:
        source = "final evaluation"
        values = {k: flat.get(k) for k in ("train_loss", "test_loss", "loss_gap",
                                           "train_accuracy", "test_accuracy", "accuracy_gap")}
    elif not len(run.metrics):
        return Text("No metrics logged.", style="dim")
    else:
        m = run.metrics
        last, last_test = m.latest("step"), m.latest("val_accuracy", "step")
        source = f"last logged values (step {fmt(last, '.0f')}"
        if last_test is not None and last_test != last:
            # test values are logged only on evaluated steps: say which one the gaps use
            source += f"; test at step {fmt(last_test, '.0f')}"
        source += ")"
        values = {"train_loss": m.latest("loss"), "test_loss": m.latest("val_loss"),
                  "train_accuracy": m.latest("accuracy"), "test_accuracy": m.latest("val_accuracy")}
        values["loss_gap"] = _difference(values["test_loss"], values["train_loss"])
        values["accuracy_gap"] = _difference(values["train_accuracy"], values["test_accuracy"])
    table = Table()
    for column in ("", "train", "test", "gap"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("loss", *(styled(fmt(values[k])) for k in ("train_loss", "test_loss", "loss_gap")))
    table.add_row("accuracy", *(styled(fmt(values[k], percent=True))
                                for k in ("train_accuracy", "test_accuracy", "accuracy_gap")))
    return _section(f"Loss and accuracy — {source}", table)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _hessian_caption(flat: dict[str, Any]) -> str:
    h = flat.get("hessian") if isinstance(flat.get("hessian"), dict) else {}
    return (f"Hessian: bn_mode {h.get('bn_mode', MISSING)}, {h.get('dtype', MISSING)}, "
            f"{h.get('hvp_mode', MISSING)}-mode HVPs on {fmt(h.get('num_examples'), ',.0f')} examples "
            f"(micro-batch {fmt(h.get('micro_batch_size'), ',.0f')}), {fmt(h.get('num_params'), ',.0f')} parameters; "
            f"HVPs: {fmt(flat.get('eig_hvps'), '.0f')} eigenvalues, {fmt(flat.get('trace_hvps'), '.0f')} trace")


def _flatness(run: RunData) -> Group | Text:
    flat = run.result.flatness
    if flat is None:
        why = "the run diverged" if run.diverged else f"status {run.result.status}"
        return Text(f"No final flatness measurement ({why}).", style="red" if run.diverged else "dim")
    residuals = flat.get("eig_residuals") or []
    eigenvalues = flat.get("eigenvalues") or []
    ratio_note = f"threshold {fmt(flat.get('threshold'))}"
    ratio_name = "λ_max / threshold"
    if flat.get("preconditioned_lambda_max") is not None:
        # adaptive thresholds apply to the preconditioned sharpness
        ratio_name = "λ_max(P⁻¹H) / threshold"
        ratio_note = f"λ_max(P⁻¹H) = {fmt(flat['preconditioned_lambda_max'])}, " + ratio_note
        if flat.get("preconditioned_converged") is False:
            ratio_note += "; NOT CONVERGED"
    unconverged = "; NOT CONVERGED (HVP budget ran out)" if flat.get("eig_converged") is False else ""
    rows = [
        ("λ_max", fmt(flat.get("lambda_max")),
         f"relative residual {fmt(residuals[0] if residuals else None, '.1e')}{unconverged}"),
        (f"top-{len(eigenvalues) or 'k'}", ", ".join(fmt(e, ".4g") for e in eigenvalues) or MISSING,
         f"descending{unconverged}"),
        ("trace", fmt_pm(flat.get("trace"), flat.get("trace_stderr")), "Hutch++ (± stderr)"),
        ("ρ-sharpness", fmt(flat.get("rho_sharpness")), f"SAM loss increase, ρ = {fmt(flat.get('rho'))}"),
        ("noise sharpness", fmt_pm(flat.get("noise_sharpness"), flat.get("noise_sharpness_stderr")),
         f"mean loss increase, σ = {fmt(flat.get('noise_sigma'))} (± stderr)"),
        (ratio_name, fmt(flat.get("sharpness_ratio"), ".3f"), ratio_note),
    ]
    if flat.get("ggn_lambda_max") is not None:
        rows.append(("GGN λ_max", fmt(flat["ggn_lambda_max"]),
                     f"Gauss-Newton JᵀH_LJ; {fmt(flat.get('ggn_hessian_ratio'), '.3f')} × the Hessian's"))
    table = Table()
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    for name, value, note in rows:
        table.add_row(name, styled(value), note)
    return _section("Flatness at the end of training", table, _hessian_caption(flat))


def _stability(run: RunData) -> Group | Text:
    c = run.curvature
    if not len(c):
        return Text("No curvature measurements during training.", style="dim")
    steps, ratio = c["step"], c["sharpness_ratio"]
    crossings = threshold_crossings(steps, ratio)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    label = "λ_max(P⁻¹H)" if run.preconditioned else "λ_max"
    table.add_row("initial sharpness λ₀", styled(fmt(run.result.initial_sharpness)))
    if c.has("lambda_max_inference"):
        table.add_row(f"latest {label}, BatchNorm inference mode",
                      f"{fmt(c.latest('lambda_max_inference'))} (moving statistics; not compared with the threshold)")
    table.add_row(f"latest {label} vs threshold",
                  f"{fmt(c.latest('lambda_max'))} vs {fmt(c.latest('threshold'))} "
                  f"(ratio {fmt(c.latest('sharpness_ratio'), '.3f')}) at step {fmt(c.latest('step'), '.0f')}")
    finite = np.isfinite(ratio)
    if finite.any():
        peak = int(np.nanargmax(np.where(finite, ratio, -np.inf)))
        table.add_row("largest ratio", f"{fmt(ratio[peak], '.3f')} at step {fmt(steps[peak], '.0f')}")
    upward = _steps_text(crossings.up)
    if crossings.starts_above:
        upward = f"already above at the first measurement; later: {upward}"
    table.add_row("crossed the threshold upward at", upward)
    table.add_row("crossed back downward at", _steps_text(crossings.down))
    table.add_row("median ratio after the first crossing", fmt(crossings.median_ratio_after, ".3f"))
    unconverged = run.unconverged
    if unconverged.any():
        table.add_row("NOT converged (HVP budget ran out)",
                      Text(f"{int(unconverged.sum())} of {len(c)} measurements, at steps "
                           f"{_steps_text([int(x) for x in steps[unconverged]])}", style="bold red"))
    elif run.curvature.has("converged"):
        table.add_row("eigensolver", f"all {len(c)} measurements converged")
    return _section(f"Edge of stability ({len(c)} measurements, steps {fmt(steps[0], '.0f')}–"
                    f"{fmt(steps[-1], '.0f')})", table)


def _warnings(warnings: list[str]) -> Text:
    text = Text()
    for warning in warnings:
        text.append(f"⚠ {warning}\n", style="yellow")
    return text


def render_run(run_dir: str | Path, console: Console | None = None) -> None:
    """Print the report of one run directory.

    Example: ``render_run("runs/mnist-gd", Console(width=120))``.
    """
    run = load_run(run_dir)
    console = console or Console()
    parts: list[Any] = [_header(run), _accuracy_table(run), _flatness(run), _stability(run)]
    if run.warnings:
        parts.append(_warnings(run.warnings))
    console.print(Group(*parts))


def _compact_percent(value: Any) -> str:
    return fmt(value, percent=True).replace(" %", "%")


# Short (two-line) headers, explained in the note, so that the table fits 80 columns.
SWEEP_COLUMNS = ("", "η", "η·λ₀/2", "final\nλ_max", "trace", "sim.\n0→end", "train\nacc", "test\nacc", "steps",
                 "status")


def _sweep_table(sweep: SweepData) -> Group:
    accuracies = [a if (a := p.test_accuracy) is not None and math.isfinite(a) else -math.inf for p in sweep.points]
    best = int(np.argmax(accuracies)) if any(math.isfinite(a) for a in accuracies) else None
    rows = [["★" if i == best else "", fmt(p.lr, ".4g"), fmt(p.eta_lambda0_over_2, ".3g"),
             styled(fmt(p.final_sharpness)), styled(fmt(p.trace)), styled(fmt(p.similarity_start_end, ".3f")),
             styled(_compact_percent(p.train_accuracy)), styled(_compact_percent(p.test_accuracy)),
             fmt(p.steps, ".0f"), _status(p.status)] for i, p in enumerate(sweep.points)]
    # One space between columns, and no column narrower than its widest cell: piped to a
    # file or a CI log (80 columns) no number is ever cut.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for j, column in enumerate(SWEEP_COLUMNS):
        width = max([len(str(row[j])) for row in rows] + [max(len(w) for w in column.split("\n"))])
        table.add_column(column, justify="left" if column in ("", "status") else "right", no_wrap=True,
                         min_width=width)
    for i, row in enumerate(rows):
        table.add_row(*row, style="bold green" if i == best else None)
    note = None
    if best is not None:
        p = sweep.points[best]
        note = (f"★ best test accuracy {fmt(p.test_accuracy, percent=True)} at η = {fmt(p.lr)} "
                f"(η·λ₀/2 = {fmt(p.eta_lambda0_over_2, '.3g')}): the Goldilocks zone at a glance. "
                "sim. 0→end: similarity of the top-k eigenvectors, start to end")
    return _section(f"Sweep {sweep.recipe}: {sweep.info.model} on {sweep.info.dataset}, {sweep.info.optimizer} "
                    f"({len(sweep.points)} learning rates, {sweep.path})", table, note)


def render_sweep(sweep_dir: str | Path, console: Console | None = None) -> None:
    """Print a sweep's table, one row per learning rate, the best test accuracy starred.

    Example: ``render_sweep("runs/cifar10-sweep", Console(width=120))``.
    """
    sweep = load_sweep(sweep_dir)
    console = console or Console()
    parts: list[Any] = [_sweep_table(sweep)]
    if sweep.warnings:
        parts.append(_warnings(sweep.warnings))
    console.print(Group(*parts))


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's key facts as strict-JSON-ready data (non-finite numbers become null).

    Example: ``print(json.dumps(run_summary("runs/mnist-gd"), indent=2))``.
    """
    run = load_run(run_dir)
    info, r, m = run.info, run.result, run.metrics
    crossings = threshold_crossings(run.curvature["step"], run.curvature["sharpness_ratio"])
    return json_ready({
        "run_dir": str(run.path),
        "recipe": {"name": info.name, "description": info.description, "model": info.model,
                   "dataset": info.dataset, "optimizer": info.optimizer, "loss": info.loss},
        "status": r.status, "stop_reason": r.stop_reason, "stop_step": r.stop_step, "wall_seconds": r.wall_seconds,
        "lr": r.lr, "lr_relative": r.lr_relative, "initial_sharpness": r.initial_sharpness,
        "initial_sharpness_inference": r.initial_sharpness_inference, "threshold": r.threshold,
        "last_logged": {k: m.latest(k) for k in ("step", "loss", "accuracy", "val_loss", "val_accuracy")},
        "curvature_measurements": len(run.curvature),
        "curvature_unconverged_steps": [int(x) for x in run.curvature["step"][run.unconverged]],
        "preconditioned": run.preconditioned,
        "crossings": {"up": crossings.up, "down": crossings.down,
                      "median_ratio_after_first": crossings.median_ratio_after},
        "flatness": r.flatness,
        "environment": environment_summary(run.environment),
        "warnings": run.warnings,
    })
