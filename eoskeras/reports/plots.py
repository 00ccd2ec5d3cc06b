"""PNG plots of a run or a learning-rate sweep, from their files alone.

Non-finite values (a diverged run) are never dropped silently: they are drawn
as red crosses on the edge of the panel at the step or η where they occur.

Example:

```python
plot_run("runs/cifar10-gd")      # -> [.../plots/loss_accuracy.png, .../plots/sharpness.png, ...]
plot_sweep("runs/cifar10-sweep")  # -> [.../plots/test_accuracy.png, ...]
```
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from eoskeras.reports.rundata import Columns, RunData, load_run  # noqa: E402
from eoskeras.reports.sweepdata import SweepData, load_sweep  # noqa: E402
from eoskeras.runs import layout  # noqa: E402

STEP_LABEL = "step (optimizer updates)"
DIVERGED_STYLE = dict(marker="x", color="red", markersize=9, markeredgewidth=2, linestyle="none")
MISSING_STYLE = dict(marker="o", color="grey", markerfacecolor="none", linestyle="none")
# A run that ended without reaching its goal (out of steps, stalled): hollow.
SHORT_STYLE = dict(marker="o", color="C1", markerfacecolor="none", markersize=9, linestyle="none")


def _figure(nrows: int, ncols: int, title: str, size: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    fig.suptitle(title, fontsize=11)
    return fig, axes.ravel()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _mark_at_edge(ax: Axes, x: np.ndarray, edge: str, label: str, style: dict) -> None:
    """Markers at ``x`` on the top or bottom edge: where a value exists but cannot be drawn."""
    if len(x):
        # x in data units, y in axes units: the marker sits on the edge whatever the y scale
        ax.plot(x, np.full(len(x), 0.97 if edge == "top" else 0.03), transform=ax.get_xaxis_transform(),
                clip_on=False, label=label, **style)


def _line(ax: Axes, columns: Columns, key: str, scale: float = 1.0, x_key: str = "step", **style) -> None:
    """Plot the finite values of ``key`` (times ``scale``) against ``x_key``; mark its non-finite ones on top."""
    x, y = columns[x_key], scale * columns[key]
    finite = np.isfinite(y) & np.isfinite(x)
    if finite.sum() == 1:
        style = {"marker": "o", **style}  # a lone point needs a marker to be seen
    if finite.any():
        ax.plot(x[finite], y[finite], **style)
    _mark_at_edge(ax, x[columns.nonfinite(key)], "top", "non-finite (NaN/inf)", DIVERGED_STYLE)


def _mark_unconverged(ax: Axes, run: RunData, values: np.ndarray, color: Any) -> None:
    """Hollow markers over the measurements whose eigensolver did not converge."""
    bad = run.unconverged & np.isfinite(values)
    if bad.any():
        ax.plot(run.curvature["step"][bad], values[bad], linestyle="none", marker="o", markersize=8,
                markerfacecolor="none", markeredgecolor=color, label="not converged (hollow)")


def _mark_divergence(ax: Axes, run: RunData) -> None:
    if run.diverged and run.result.stop_step is not None:
        ax.axvline(run.result.stop_step, color="red", linestyle=":", label=f"diverged (step {run.result.stop_step})")


def _legend(ax: Axes) -> None:
    """A legend with one entry per label (edge markers of several series share one)."""
    unique = dict(zip(*reversed(ax.get_legend_handles_labels())))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)


def _lambda_label(run: RunData) -> str:
    return "λ_max(P⁻¹H)" if run.preconditioned else "λ_max"


def _loss_accuracy(run: RunData, path: Path) -> Path:
    fig, (loss_ax, acc_ax) = _figure(1, 2, run.info.title, (11, 4.2))
    m = run.metrics
    # the train loss and accuracy of a row were computed before its update (see recorder.py)
    train_x = "loss_step" if m.has("loss_step") else "step"
    _line(loss_ax, m, "loss", label="train", color="C0", x_key=train_x)
    _line(loss_ax, m, "val_loss", label="test", color="C1", marker=".")
    if np.any(m["loss"] > 0) or np.any(m["val_loss"] > 0):
        loss_ax.set_yscale("log")
    loss_ax.set(xlabel=STEP_LABEL, ylabel="loss (log scale)", title="Loss")
    _line(acc_ax, m, "accuracy", scale=100, label="train", color="C0", x_key=train_x)
    _line(acc_ax, m, "val_accuracy", scale=100, label="test", color="C1", marker=".")
    acc_ax.set(xlabel=STEP_LABEL, ylabel="accuracy (%)", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        _mark_divergence(ax, run)
        ax.grid(alpha=0.3)
        _legend(ax)
    return save_figure(fig, path)


def _threshold_line(ax: Axes, run: RunData) -> None:
    """The threshold at each measurement, and between them as it moves with η (warm-up, schedules)."""
    c, m = run.curvature, run.metrics
    measured = np.isfinite(c["threshold"])
    if not measured.any():
        return
    steps, thresholds = c["step"][measured], c["threshold"][measured]
    ax.plot(steps, thresholds, "k_", markersize=12, label="threshold at measurement")
    logged = np.isfinite(m["lr"]) & (m["lr"] > 0)
    if logged.sum() < 2:
        ax.plot(steps, thresholds, drawstyle="steps-post", color="black", linestyle="--", label="threshold")
        return
    # threshold × η is the optimizer's constant (2 for GD, 2 + 2β for momentum, ...): the median
    # over the measurements is immune to the few warm-up steps where the two η differ by one step
    constant = float(np.median(thresholds * np.interp(steps, m["step"][logged], m["lr"][logged])))
    # a row's lr is that of the update that led to its step, so it applies from the step before
    ax.plot(m["step"][logged] - 1, constant / m["lr"][logged], drawstyle="steps-post", color="black",
            linestyle="--", label=f"threshold {constant:.3g}/η")


def _sharpness(run: RunData, path: Path) -> Path:
    fig, (top, bottom) = _figure(2, 1, run.info.title, (9, 6.5))
    _line(top, run.curvature, "lambda_max", label=f"{_lambda_label(run)} of the trained loss", color="C3", marker=".")
    _mark_unconverged(top, run, run.curvature["lambda_max"], "C3")
    if run.curvature.has("lambda_max_inference"):
        # the paper's convention, never compared with the threshold
        _line(top, run.curvature, "lambda_max_inference", label=f"{_lambda_label(run)}, BatchNorm inference mode "
              "(moving statistics; not the trained loss)", color="C7", linestyle="--", marker=".")
        top.set_yscale("log")
    _threshold_line(top, run)
    top.set(ylabel="sharpness", title=f"{_lambda_label(run)} against the stability threshold")
    if run.curvature.has("sharpness_ratio"):
        _line(bottom, run.curvature, "sharpness_ratio", label=f"{_lambda_label(run)} / threshold",
              color="C3", marker=".")
        _mark_unconverged(bottom, run, run.curvature["sharpness_ratio"], "C3")
        bottom.axhline(1.0, color="black", linestyle="--", label="edge of stability (ratio 1)")
    else:
        bottom.text(0.5, 0.5, "no stability threshold for this optimizer", ha="center", transform=bottom.transAxes)
    bottom.set(xlabel=STEP_LABEL, ylabel="ratio", title="Sharpness relative to the threshold")
    if run.curvature.has("num_above"):  # auto-k: how many eigenvalues are above c × threshold
        count = bottom.twinx()
        count.step(run.curvature["step"], run.curvature["num_above"], where="post", color="C0", alpha=0.7)
        count.set_ylabel("eigenvalues above c × threshold (auto-k)", color="C0")
    for ax in (top, bottom):
        _mark_divergence(ax, run)
        ax.grid(alpha=0.3)
        _legend(ax)
    return save_figure(fig, path)


def _eigenvalues(run: RunData, path: Path) -> Path:
    fig, (ax,) = _figure(1, 1, run.info.title, (9, 4.5))
    k = run.eigenvalues.shape[1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, k))
    for i in range(k):
        values = run.eigenvalues[:, i]
        ok = np.isfinite(values)
        ax.plot(run.curvature["step"][ok], values[ok], color=colors[i], marker=".", label=f"λ_{i + 1}")
        _mark_unconverged(ax, run, values, colors[i])
    _threshold_line(ax, run)
    ax.set(xlabel=STEP_LABEL, ylabel="eigenvalue",
           title=f"Top-{k} eigenvalues of {'P⁻¹H' if run.preconditioned else 'the Hessian'}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return save_figure(fig, path)


def _similarity(run: RunData, path: Path) -> Path:
    fig, (ax,) = _figure(1, 1, run.info.title, (9, 4.5))
    c = run.curvature
    _line(ax, c, "similarity_first", label="top-k subspace vs first measurement", color="C0", marker=".")
    _line(ax, c, "similarity_prev", label="top-k subspace vs previous measurement", color="C2", marker=".")
    _line(ax, c, "cosine_first", label="|cos| top eigenvector vs first", color="C4", linestyle="--")
    ax.set(xlabel=STEP_LABEL, ylabel="similarity (1 = same, 0 = orthogonal)", ylim=(-0.02, 1.05),
           title="Rotation of the leading eigenvectors")
    _mark_divergence(ax, run)
    ax.grid(alpha=0.3)
    _legend(ax)
    return save_figure(fig, path)


def _density(run: RunData, path: Path) -> Path:
    fig, (ax,) = _figure(1, 1, run.info.title, (9, 4.5))
    d = run.density
    positive = d.density[d.density > 0]
    # log axes cannot show zeros; clip far below the peak so the tails stay visible
    floor = positive.max() * 1e-8 if positive.size else 1e-12
    ax.semilogy(d.grid, np.maximum(d.density, floor), color="C0", label="spectral density (SLQ)")
    _mark_at_edge(ax, d.nodes, "bottom", "Lanczos nodes", dict(marker="|", color="C1", linestyle="none"))
    threshold = run.result.threshold
    if threshold is not None and np.isfinite(threshold) and not run.preconditioned:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="eigenvalue", ylabel="density (log scale)", title="Hessian spectral density at the end")
    ax.grid(alpha=0.3)
    _legend(ax)
    return save_figure(fig, path)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's plots into ``run_dir/plots/``; returns the files written.

    Plots whose data the run lacks (no curvature measured, no density) are skipped.
    Example: ``for png in plot_run("runs/mnist-gd"): print(png)``.
    """
    run = load_run(run_dir)
    out = run.path / layout.PLOTS
    written = [_loss_accuracy(run, out / "loss_accuracy.png")] if len(run.metrics) else []
    if len(run.curvature):
        written += [_sharpness(run, out / "sharpness.png"), _eigenvalues(run, out / "eigenvalues.png")]
        if run.curvature.has("similarity_first"):
            written.append(_similarity(run, out / "similarity.png"))
    if run.density is not None:
        written.append(_density(run, out / "density.png"))
    return written


def _sweep_array(sweep: SweepData, name: str) -> np.ndarray:
    return np.array([np.nan if (v := getattr(p, name)) is None else v for p in sweep.points], dtype=float)


def _threshold_constant(sweep: SweepData) -> tuple[float, str]:
    """c in "threshold = c/η" from the runs' own thresholds (2 for plain GD)."""
    products = _sweep_array(sweep, "threshold") * _sweep_array(sweep, "lr")
    products = products[np.isfinite(products)]
    if not products.size:
        return 2.0, "2"
    c = float(np.median(products))
    return c, f"{c:.3g}"


def _sweep_panel(ax: Axes, sweep: SweepData, name: str, ylabel: str, scale: float, log_y: bool) -> np.ndarray:
    """Plot one column of the sweep against η; returns the (scaled) values."""
    lr, values = _sweep_array(sweep, "lr"), scale * _sweep_array(sweep, name)
    diverged = np.array([p.status == "diverged" for p in sweep.points])
    short = np.array([p.status in ("max_steps", "stalled") for p in sweep.points])
    finite = np.isfinite(values)
    ax.plot(lr[finite & ~diverged], values[finite & ~diverged], "o-", color="C0", label=ylabel)
    if (finite & short).any():
        ax.plot(lr[finite & short], values[finite & short], **SHORT_STYLE, label="goal not reached (out of steps "
                "or stalled)")
    if (finite & diverged).any():
        ax.plot(lr[finite & diverged], values[finite & diverged], **DIVERGED_STYLE, label="diverged run")
    # room below the data for the edge markers of missing values
    ax.set_ymargin(0.15)
    _mark_at_edge(ax, lr[~finite & diverged], "bottom", "diverged (no value)", DIVERGED_STYLE)
    _mark_at_edge(ax, lr[~finite & ~diverged], "bottom", "not measured", MISSING_STYLE)
    c, c_text = _threshold_constant(sweep)
    lambda0 = 2 * _sweep_array(sweep, "eta_lambda0_over_2") / lr
    lambda0 = lambda0[np.isfinite(lambda0) & (lambda0 > 0)]
    if lambda0.size:
        # where the initial sharpness meets the threshold: the paper's phase transition
        ax.axvline(c / np.median(lambda0), color="grey", linestyle=":", label=f"η = {c_text}/λ₀ (initial sharpness)")
    ax.set_xscale("log")
    if log_y and np.any(values[finite] > 0):
        ax.set_yscale("log")
        # plain numbers (60, 100, 200) read better than 6×10¹ on a short log range
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set(xlabel="learning rate η (log scale)", ylabel=ylabel)
    ax.grid(alpha=0.3, which="both")
    return values


# (column, file, y label, scale, log y, title)
SWEEP_PANELS = (
    ("test_accuracy", "test_accuracy.png", "test accuracy (%)", 100.0, False, "Test accuracy at the stopping point"),
    ("final_sharpness", "sharpness.png", "final λ_max", 1.0, True, "Final sharpness against the threshold"),
    ("trace", "trace.png", "Hessian trace", 1.0, True, "Final Hessian trace"),
    ("similarity_start_end", "similarity.png", "similarity start→end", 1.0, False,
     "Top-k eigenvector similarity, start to end (1 = same, 0 = orthogonal)"),
)


def plot_sweep(sweep_dir: str | Path) -> list[Path]:
    """Write a sweep's plots against η into ``sweep_dir/plots/``; returns the files.

    Example: ``plot_sweep("runs/cifar10-sweep")`` → test_accuracy, sharpness, trace, similarity PNGs.
    """
    sweep = load_sweep(sweep_dir)
    lr = _sweep_array(sweep, "lr")
    written = []
    for name, filename, ylabel, scale, log_y, title in SWEEP_PANELS:
        fig, (ax,) = _figure(1, 1, sweep.info.title, (8, 4.5))
        values = _sweep_panel(ax, sweep, name, ylabel, scale, log_y)
        if name == "final_sharpness" and np.isfinite(lr).any():
            c, c_text = _threshold_constant(sweep)
            grid = np.geomspace(np.nanmin(lr), np.nanmax(lr), 100)
            ax.plot(grid, c / grid, "k--", label=f"threshold {c_text}/η")
        if name == "test_accuracy" and np.isfinite(values).any():
            best = int(np.nanargmax(values))
            ax.plot(lr[best], values[best], "*", color="gold", markersize=16, markeredgecolor="black",
                    label="best test accuracy")
        if name == "similarity_start_end":
            ax.set_ylim(-0.02, 1.05)
        ax.set_title(title)
        _legend(ax)
        written.append(save_figure(fig, sweep.path / layout.PLOTS / filename))
    return written
