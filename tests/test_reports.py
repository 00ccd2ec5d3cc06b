"""Reports rendered from synthetic run and sweep directories written exactly as
the runner writes them (eoskeras.runs.layout), including a diverged run with
NaN/Infinity values and a truncated final line."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from eoskeras.reports.formatting import fmt, fmt_pm, fmt_seconds
from eoskeras.reports.plots import plot_run, plot_sweep
from eoskeras.reports.rundata import ReportError, load_run, threshold_crossings
from eoskeras.reports.sweepdata import load_sweep
from eoskeras.reports.terminal import render_run, render_sweep, run_summary
from eoskeras.runs import layout

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LR = 0.1  # threshold 2/η = 20 after a 2-step warm-up from η/2 (threshold 40)
# λ_max/threshold at the curvature steps 0, 10, …, 100: crosses 1 upward at 40 and 80, downward at 60
RATIOS = [0.2, 0.4, 0.6, 0.9, 1.02, 1.05, 0.98, 0.99, 1.01, 1.03, 1.0]
BARE_NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def write_jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    # Python's json writes NaN/Infinity bare, as the runner's does
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)


def threshold_at(step: int) -> float:
    return 2 / (LR / 2) if step < 2 else 2 / LR


def write_recipe(run: Path, name: str) -> None:
    recipe = {"name": name, "description": "fc-tanh on the first 1,000 MNIST digits",
              "data": {"dataset": "mnist", "train_size": 1000}, "model": {"name": "fc_tanh", "options": {"width": 32}},
              "loss": "mse", "optimizer": {"name": "gd", "lr": None, "lr_relative": 1.5}}
    (run / layout.RECIPE).write_text(yaml.safe_dump(recipe))
    (run / layout.ENVIRONMENT).write_text(json.dumps(
        {"python": "3.11.9", "platform": "Linux", "packages": {"eoskeras": "0.1.0", "tensorflow": "2.21.0",
                                                               "keras": "3.15.0", "numpy": None},
         "devices": ["/device:CPU:0", "/device:GPU:0"], "strategy": "default", "replicas": 1, "seed": 0,
         "command": ["eoskeras", "run"]}))


def make_completed_run(run: Path) -> Path:
    """100 steps of GD at the edge of stability, measured every 10 steps."""
    run.mkdir(parents=True)
    write_recipe(run, "mnist-eos")
    metrics, curvature = [], []
    for step in range(101):
        row = {"step": step, "loss": 1.0 / (1 + step) + 0.01 * (step % 3), "accuracy": min(0.5 + step / 150, 0.99),
               "lr": LR / 2 if step < 2 else LR}
        if step % 20 == 0:
            row.update(val_loss=1.2 / (1 + step) + 0.05, val_accuracy=min(0.45 + step / 180, 0.9))
        if step % 10 == 0:
            ratio = RATIOS[step // 10]
            threshold = threshold_at(step)
            eigenvalues = [ratio * threshold * f for f in (1.0, 0.8, 0.5)]
            record = {"step": step, "lambda_max": eigenvalues[0], "eigenvalues": eigenvalues, "threshold": threshold,
                      "sharpness_ratio": ratio, "eig_residual": 1e-4, "eig_hvps": 40, "converged": True,
                      "preconditioned": False, "similarity_prev": 1.0 if step == 0 else 0.97,
                      "similarity_first": 1.0 - step / 200, "cosine_first": 1.0 - step / 150, "seconds": 0.2}
            curvature.append(record)
            row.update({k: record[k] for k in ("lambda_max", "threshold", "sharpness_ratio", "similarity_first")})
        metrics.append(row)
    write_jsonl(run / layout.METRICS_JSONL, metrics)
    write_jsonl(run / layout.CURVATURE, curvature)
    flatness = {"lambda_max": 20.62, "eigenvalues": [20.62, 16.5, 10.3], "eig_residuals": [2.5e-5, 1e-4, 3e-4],
                "eig_hvps": 60, "threshold": 20.0, "sharpness_ratio": 1.031, "trace": 123.4, "trace_stderr": 4.56,
                "trace_hvps": 99, "rho": 0.05, "rho_sharpness": 0.0123, "noise_sigma": 0.01,
                "noise_sharpness": 0.00456, "noise_sharpness_stderr": 0.00078, "train_loss": 0.0102,
                "train_accuracy": 0.9876, "test_loss": 0.0834, "test_accuracy": 0.8765, "accuracy_gap": 0.1111,
                "loss_gap": 0.0732, "hessian": {"bn_mode": "batch", "dtype": "float32", "hvp_mode": "reverse",
                                                "num_examples": 1000, "micro_batch_size": 500, "num_params": 27562}}
    result = {"status": "completed", "stop_reason": "reached max_steps=100", "stop_step": 100, "wall_seconds": 754.2,
              "initial_sharpness": 13.33, "lr": LR, "lr_relative": 1.5, "threshold": 20.0, "optimizer": "gd",
              "flatness": flatness}
    (run / layout.RESULT).write_text(json.dumps(result))
    grid = np.linspace(-5, 25, 200)
    np.savez(run / layout.DENSITY, grid=grid, density=np.exp(-0.5 * grid**2) + 1e-6 * (grid > 18),
             nodes=np.array([-1.0, 0.0, 1.0, 20.6]), weights=np.array([0.3, 0.4, 0.29, 0.01]))
    return run


def make_diverged_run(run: Path) -> Path:
    """A run whose loss turns NaN/Infinity at step 6, with a truncated final line."""
    run.mkdir(parents=True)
    write_recipe(run, "mnist-too-fast")
    metrics = [{"step": s, "loss": 2.0 * 3**s, "accuracy": 0.1, "lr": 1.0} for s in range(6)]
    metrics += [{"step": 6, "loss": math.inf, "accuracy": 0.1, "lr": 1.0},
                {"step": 7, "loss": math.nan, "accuracy": math.nan, "val_loss": math.nan, "val_accuracy": 0.098,
                 "lr": 1.0}]
    write_jsonl(run / layout.METRICS_JSONL, metrics, tail='{"step": 8, "loss": Na')
    write_jsonl(run / layout.CURVATURE, [
        {"step": s, "lambda_max": 30.0 + s, "eigenvalues": [30.0 + s, 12.0], "threshold": 2.0,
         "sharpness_ratio": (30.0 + s) / 2, "eig_residual": 1e-3, "eig_hvps": 30, "converged": True,
         "preconditioned": False, "similarity_prev": 0.5, "similarity_first": 1.0 - s / 10, "cosine_first": 0.9,
         "seconds": 0.1} for s in (0, 5)])
    (run / layout.RESULT).write_text(json.dumps(
        {"status": "diverged", "stop_reason": "diverged: training loss is nan", "stop_step": 7,
         "wall_seconds": 3.5, "initial_sharpness": 30.0, "lr": 1.0, "lr_relative": None, "threshold": 2.0,
         "optimizer": "gd", "flatness": None}))
    return run


SWEEP_POINTS = [  # (lr, status, test accuracy, trace); the last one diverged, one trace not measured
    (0.01, "completed", 0.80, 300.0), (0.016, "completed", 0.83, None), (0.0256, "completed", 0.8642, 150.0),
    (0.041, "completed", 0.85, 90.0), (0.0655, "diverged", None, None),
]


def make_sweep(sweep: Path) -> Path:
    sweep.mkdir()
    points = []
    for i, (lr, status, test_accuracy, trace) in enumerate(SWEEP_POINTS):
        run_dir = f"lr_{i:02d}_{lr}"
        (sweep / run_dir).mkdir()
        write_recipe(sweep / run_dir, "mnist-sweep")
        (sweep / run_dir / layout.RESULT).write_text(json.dumps({"status": status, "threshold": 2 / lr, "lr": lr}))
        diverged = status == "diverged"
        points.append({"lr": lr, "lr_relative": None, "eta_lambda0_over_2": lr * 40.0 / 2, "run_dir": run_dir,
                       "status": status, "stop_reason": "diverged: training loss is nan" if diverged else "max steps",
                       "steps": 12 if diverged else 500, "final_sharpness": None if diverged else 1.9 / lr,
                       "trace": trace, "similarity_start_end": None if diverged else 0.98 - 8 * lr,
                       "train_accuracy": None if diverged else 0.99, "test_accuracy": test_accuracy})
    (sweep / layout.SWEEP_JSON).write_text(json.dumps({"recipe": "mnist-sweep", "points": points}))
    return sweep


def report_text(render, path: Path) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    render(path, console)
    return console.export_text()


def cells(text: str, label: str) -> list[str]:
    """The stripped cells of the first table row whose first cell is ``label``."""
    for line in text.splitlines():
        parts = [c.strip() for c in re.split(r"[│┃]", line)][1:-1]
        if parts and parts[0] == label:
            return parts[1:]
    raise AssertionError(f"no row {label!r} in:\n{text}")


def assert_pngs(paths: list[Path], names: set[str]) -> None:
    assert {p.name for p in paths} == names
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path
        assert 10_000 < len(data) < 2_000_000, (path, len(data))


# ------------------------------------------------------------------ loading
def test_load_run_columns_and_missing_values(tmp_path):
    run = load_run(make_completed_run(tmp_path / "run"))
    assert len(run.metrics) == 101 and len(run.curvature) == 11
    assert np.isnan(run.metrics["val_loss"][1]) and not run.metrics.nonfinite("val_loss").any()
    assert run.metrics.latest("val_accuracy") == pytest.approx(0.9)
    assert run.eigenvalues.shape == (11, 3)
    assert run.info.title == "mnist-eos: fc_tanh(width=32) on mnist (1000 train), gd"
    assert run.warnings == []


def test_truncated_line_and_nonfinite_values_become_warnings(tmp_path):
    run = load_run(make_diverged_run(tmp_path / "run"))
    assert list(run.metrics["step"]) == list(range(8))  # the truncated step-8 line is dropped
    assert run.metrics.nonfinite("loss")[6:].all() and not run.metrics.nonfinite("loss")[:6].any()
    assert any("unparsable final line" in w for w in run.warnings)
    assert any("non-finite values from step 6" in w for w in run.warnings)


def test_resumed_run_keeps_the_latest_row_of_a_repeated_step(tmp_path):
    run_dir = make_completed_run(tmp_path / "run")
    with open(run_dir / layout.METRICS_JSONL, "a") as handle:
        handle.write(json.dumps({"step": 100, "loss": 0.5, "accuracy": 0.9}) + "\n")
    run = load_run(run_dir)
    assert len(run.metrics) == 101 and run.metrics.latest("loss") == 0.5
    assert any("repeat a step" in w for w in run.warnings)


def test_interrupted_sweep_is_read_from_its_csv(tmp_path):
    sweep_dir = make_sweep(tmp_path / "sweep")
    points = json.loads((sweep_dir / layout.SWEEP_JSON).read_text())["points"]
    with open(sweep_dir / layout.SWEEP_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in p.items()} for p in points)
    from_json = load_sweep(sweep_dir)
    (sweep_dir / layout.SWEEP_JSON).unlink()
    from_csv = load_sweep(sweep_dir)
    assert from_csv.points == from_json.points and from_csv.recipe == "mnist-sweep"
    assert from_csv.points[0].threshold == pytest.approx(200.0) and from_csv.points[-1].steps == 12
    assert from_csv.warnings and not from_json.warnings


def test_threshold_crossings():
    steps = np.arange(0, 110, 10)
    crossings = threshold_crossings(steps, np.array(RATIOS))
    assert crossings.up == [40, 80] and crossings.down == [60]
    assert crossings.median_ratio_after == pytest.approx(np.median(RATIOS[4:]))
    assert threshold_crossings(steps[:3], np.array([0.1, np.nan, 0.5])) == type(crossings)([], [], None, False)
    started_above = threshold_crossings(steps[:3], np.array([1.5, 0.5, 1.2]))
    assert started_above.up == [20] and started_above.starts_above


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")),
                                  lambda p: None])
def test_non_run_directory_is_a_report_error(tmp_path, make):
    path = tmp_path / "not_a_run"
    make(path)
    for load in (load_run, load_sweep):
        with pytest.raises(ReportError, match=re.escape(str(path))):
            load(path)


def test_formatting_never_shows_a_bare_nan():
    assert fmt(math.nan) == "diverged" and fmt(math.inf) == "diverged" and fmt(None) == "—"
    assert fmt(0.81234, percent=True) == "81.23 %" and fmt(np.float32(2.5)) == "2.5"
    assert fmt_pm(123.4, 4.56) == "123.4 ± 4.6" and fmt_pm(math.nan, 1.0) == "diverged"
    assert fmt_pm(123.4, math.inf) == "123.4"  # one sample: no error bar, and no divergence either
    assert fmt_seconds(754.2) == "12 min 34 s" and fmt_seconds(7300) == "2 h 01 min"


# ------------------------------------------------------------------ plots
def test_plot_run_writes_every_plot(tmp_path):
    run_dir = make_completed_run(tmp_path / "run")
    paths = plot_run(run_dir)
    assert all(p.parent == run_dir / layout.PLOTS for p in paths)
    assert_pngs(paths, {"loss_accuracy.png", "sharpness.png", "eigenvalues.png", "similarity.png", "density.png"})


def test_plot_run_of_a_diverged_run(tmp_path):
    assert_pngs(plot_run(make_diverged_run(tmp_path / "run")),
                {"loss_accuracy.png", "sharpness.png", "eigenvalues.png", "similarity.png"})


def test_plot_sweep(tmp_path):
    sweep_dir = make_sweep(tmp_path / "sweep")
    paths = plot_sweep(sweep_dir)
    assert all(p.parent == sweep_dir / layout.PLOTS for p in paths)
    assert_pngs(paths, {"test_accuracy.png", "sharpness.png", "trace.png", "similarity.png"})


def edge_markers(ax, label: str) -> list[float]:
    return [x for line in ax.lines if line.get_label() == label for x in line.get_xdata()]


def test_non_finite_and_missing_values_are_marked_not_dropped(tmp_path):
    import matplotlib.pyplot as plt
    from eoskeras.reports.plots import _line, _sweep_panel
    run = load_run(make_diverged_run(tmp_path / "run"))
    sweep = load_sweep(make_sweep(tmp_path / "sweep"))
    fig, (loss_ax, trace_ax) = plt.subplots(1, 2)
    _line(loss_ax, run.metrics, "loss", label="train")
    _sweep_panel(trace_ax, sweep, "trace", "trace", 1.0, True)
    assert edge_markers(loss_ax, "non-finite (NaN/inf)") == [6, 7]
    assert edge_markers(trace_ax, "diverged (no value)") == [0.0655]
    assert edge_markers(trace_ax, "not measured") == [0.016]
    plt.close(fig)


def test_threshold_line_follows_the_learning_rate_between_measurements(tmp_path):
    import matplotlib.pyplot as plt
    from eoskeras.reports.plots import _threshold_line
    run = load_run(make_completed_run(tmp_path / "run"))
    fig, ax = plt.subplots()
    _threshold_line(ax, run)
    (line,) = [line for line in ax.lines if line.get_label() == "threshold 2/η"]
    # the warm-up's threshold 40 ends after step 2, not at the next measurement (step 10)
    assert np.allclose(line.get_ydata(), 2 / run.metrics["lr"]) and list(line.get_ydata()[:4]) == [40, 40, 20, 20]
    assert edge_markers(ax, "threshold at measurement") == list(range(0, 101, 10))
    plt.close(fig)


# ------------------------------------------------------------------ terminal
def test_render_run_shows_the_key_numbers(tmp_path):
    text = report_text(render_run, make_completed_run(tmp_path / "run"))
    for expected in ("mnist-eos", "fc-tanh on the first 1,000 MNIST digits", "fc_tanh(width=32)", "mnist (1000 train)",
                     "reached max_steps=100 (step 100)", "12 min 34 s", "1.5 × the threshold step size",
                     "λ₀ = 13.33", "20.62", "2.5e-05", "20.62, 16.5, 10.3", "123.4 ± 4.6", "0.0123",
                     "0.00456 ± 0.00078", "1.031", "98.76 %", "87.65 %", "11.11 %", "bn_mode batch", "float32",
                     "1,000 examples", "27,562 parameters",
                     "python 3.11.9, tensorflow 2.21.0, keras 3.15.0 · CPU:0, GPU:0 · strategy default · seed 0"):
        assert expected in text, expected
    assert cells(text, "crossed the threshold upward at") == ["40, 80"]
    assert cells(text, "crossed back downward at") == ["60"]
    assert cells(text, "median ratio after the first crossing") == [f"{np.median(RATIOS[4:]):.3f}"]
    assert cells(text, "accuracy") == ["98.76 %", "87.65 %", "11.11 %"]
    assert not BARE_NAN.search(text)


def test_render_run_of_a_diverged_run_marks_it(tmp_path):
    text = report_text(render_run, make_diverged_run(tmp_path / "run"))
    assert "diverged — diverged: training loss is nan (step 7)" in text
    assert "No final flatness measurement (the run diverged)" in text
    assert "last logged values (step 7)" in text
    assert cells(text, "loss") == ["diverged"] * 3  # train, test, gap
    assert cells(text, "accuracy") == ["diverged", "9.80 %", "diverged"]  # a finite test value is still shown
    assert "unparsable final line" in text and "non-finite values from step 6" in text
    assert cells(text, "crossed the threshold upward at") == ["already above at the first measurement; later: never"]
    # the runner's own stop reason quotes the loss ("... is nan"); every number the report formats is marked
    assert not BARE_NAN.search(text.replace("diverged: training loss is nan", ""))


def test_render_run_without_a_final_evaluation_uses_the_last_logged_values(tmp_path):
    run_dir = make_completed_run(tmp_path / "run")
    result = json.loads((run_dir / layout.RESULT).read_text())
    result.update(status="interrupted", stop_reason="interrupted by the user", stop_step=101, flatness=None)
    (run_dir / layout.RESULT).write_text(json.dumps(result))
    with open(run_dir / layout.METRICS_JSONL, "a") as handle:
        handle.write(json.dumps({"step": 101, "loss": 0.02, "accuracy": 0.995}) + "\n")
    text = report_text(render_run, run_dir)
    assert "last logged values (step 101; test at step 100)" in text
    assert cells(text, "accuracy") == ["99.50 %", "90.00 %", "9.50 %"]
    assert "No final flatness measurement (status interrupted)" in text


def test_render_sweep_highlights_the_best_test_accuracy(tmp_path):
    text = report_text(render_sweep, make_sweep(tmp_path / "sweep"))
    best_row = next(line for line in text.splitlines() if "★" in line and "best" not in line)
    assert best_row.split() == ["★", "0.0256", "0.512", "74.22", "150", "0.775", "99.00%", "86.42%", "500", "completed"]
    assert "best test accuracy 86.42 % at η = 0.0256" in text
    diverged_row = next(line for line in text.splitlines() if "0.0655" in line)
    assert diverged_row.split() == ["0.0655", "1.31"] + ["—"] * 5 + ["12", "diverged"]
    assert not BARE_NAN.search(text)


def test_sweep_table_is_whole_at_80_columns_without_a_terminal(tmp_path):
    sweep_dir = make_sweep(tmp_path / "sweep")
    points = json.loads((sweep_dir / layout.SWEEP_JSON).read_text())
    for p in points["points"]:  # long numbers, as a real sweep writes them
        p["lr"], p["final_sharpness"] = p["lr"] * 1.000123, (p["final_sharpness"] or 0) * 123.456 or None
    (sweep_dir / layout.SWEEP_JSON).write_text(json.dumps(points))
    out = io.StringIO()
    render_sweep(sweep_dir, Console(width=80, file=out))  # a file: no terminal, no colour
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for header in ("η·λ₀/2", "λ_max", "trace", "0→end", "acc", "steps", "status"):
        assert header in text
    for p in points["points"]:
        assert f"{p['lr']:.4g}" in text and p["status"] in text
        if p["final_sharpness"]:
            assert f"{p['final_sharpness']:.4g}" in text


def test_run_summary_is_strict_json(tmp_path):
    summary = run_summary(make_completed_run(tmp_path / "ok"))
    assert summary["crossings"] == {"up": [40, 80], "down": [60], "median_ratio_after_first": pytest.approx(1.01)}
    assert summary["flatness"]["trace"] == 123.4
    diverged = json.loads(json.dumps(run_summary(make_diverged_run(tmp_path / "bad")), allow_nan=False))
    assert diverged["status"] == "diverged" and diverged["last_logged"]["loss"] is None
    assert diverged["last_logged"]["step"] == 7 and diverged["warnings"]


def test_reports_do_not_import_tensorflow():
    code = ("import sys, eoskeras.reports.terminal, eoskeras.reports.plots, eoskeras.reports.rundata;"
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------ live progress
def fake_training(progress, steps: int, total: int, converged_until: int | None = None) -> None:
    """What model.fit does to a callback, with logs like the SharpnessMonitor's
    (eigen-solves unconverged from epoch ``converged_until`` on)."""
    progress.set_params({"epochs": total, "steps": 1, "verbose": 0})
    progress.on_train_begin()
    for epoch in range(steps):
        logs = {"loss": 1.0 / (epoch + 1), "accuracy": np.float32(0.5 + epoch / 20)}
        if epoch % 2 == 0:
            logs.update(val_loss=1.1 / (epoch + 1), val_accuracy=0.4 + epoch / 25)
        if epoch >= 1:  # curvature carried forward from step 1 on
            logs.update(lambda_max=19.5 + epoch, threshold=20.0, sharpness_ratio=(19.5 + epoch) / 20,
                        similarity_first=0.9, curvature_step=1.0,
                        eig_converged=float(converged_until is None or epoch < converged_until))
        progress.on_epoch_end(epoch, logs)
    progress.on_train_end()


def live_console(terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=120, color_system=None)


def test_live_progress_on_a_terminal():
    from eoskeras.reports.live import RichProgress
    console = live_console(terminal=True)
    progress = RichProgress(total_steps=10, initial_step=3, console=console, refresh_per_second=20)
    fake_training(progress, steps=4, total=10)
    out = console.file.getvalue()
    assert not progress.active and progress.step == 7
    for expected in ("7/10", "λ_max / threshold", "22.5", "1.125", "similarity to first", "65.00 %", "48.00 %",
                     "curvature measured at step 1"):
        assert expected in out, expected


def test_live_progress_prints_plain_lines_when_not_a_terminal():
    from eoskeras.reports.live import RichProgress
    console = live_console(terminal=False)
    progress = RichProgress(total_steps=9, console=console, plain_every=3)
    fake_training(progress, steps=7, total=9)  # stops early (e.g. a stop condition)
    lines = console.file.getvalue().splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 3/9", "step 6/9", "step 7/9"]
    assert "loss 0.1429" in lines[-1] and "λ_max 25.5" in lines[-1] and "λ_max / threshold 1.275" in lines[-1]
    assert "val accuracy 64.00 %" in lines[-1]  # the latest evaluation, carried to steps without one
    assert "\x1b[" not in console.file.getvalue()
    assert "NOT CONVERGED" not in console.file.getvalue()


def test_live_progress_marks_an_unconverged_measurement():
    from eoskeras.reports.live import RichProgress
    console = live_console(terminal=False)
    progress = RichProgress(total_steps=9, console=console, plain_every=3)
    fake_training(progress, steps=7, total=9, converged_until=5)
    lines = console.file.getvalue().splitlines()
    assert ["NOT CONVERGED" in line for line in lines] == [False, True, True]


def test_live_progress_stops_its_display_when_training_raises():
    from eoskeras.reports.live import RichProgress
    console = live_console(terminal=True)
    with pytest.raises(RuntimeError, match="boom"):
        with RichProgress(total_steps=5, console=console) as progress:
            progress.on_train_begin()
            progress.on_epoch_end(0, {"loss": math.nan})
            assert progress.active
            raise RuntimeError("boom")  # Keras would skip on_train_end here
    assert not progress.active
    assert "diverged" in console.file.getvalue()


# ------------------------------------------------------------- convergence
def make_unconverged_run(run: Path) -> Path:
    """The completed run with the measurements at steps 30 and 70 and the final top-k unconverged."""
    make_completed_run(run)
    rows = [json.loads(line) for line in (run / layout.CURVATURE).read_text().splitlines()]
    for row in rows:
        row["converged"] = row["step"] not in (30, 70)
    write_jsonl(run / layout.CURVATURE, rows)
    result = json.loads((run / layout.RESULT).read_text())
    result["flatness"]["eig_converged"] = False
    (run / layout.RESULT).write_text(json.dumps(result))
    return run


def test_unconverged_measurements_are_marked_in_the_terminal_report(tmp_path):
    text = report_text(render_run, make_unconverged_run(tmp_path / "run"))
    assert cells(text, "NOT converged (HVP budget ran out)") == ["2 of 11 measurements, at steps 30, 70"]
    assert "NOT CONVERGED" in text  # the final flatness top-k
    converged = report_text(render_run, make_completed_run(tmp_path / "ok"))
    assert cells(converged, "eigensolver") == ["all 11 measurements converged"]
    assert "NOT CONVERGED" not in converged


def test_unconverged_measurements_are_hollow_in_the_plots(tmp_path):
    import matplotlib.pyplot as plt
    from eoskeras.reports import plots
    run = load_run(make_unconverged_run(tmp_path / "run"))
    for draw in (plots._sharpness, plots._eigenvalues):
        draw(run, tmp_path / "plot.png")
        fig = plt.gcf() if plt.get_fignums() else None
        assert fig is None  # each plot closes its figure
    fig, ax = plt.subplots()
    plots._mark_unconverged(ax, run, run.curvature["lambda_max"], "C3")
    (hollow,) = [line for line in ax.lines if line.get_label() == "not converged (hollow)"]
    assert list(hollow.get_xdata()) == [30, 70] and hollow.get_markerfacecolor() == "none"
    plt.close(fig)


def test_run_summary_lists_unconverged_steps(tmp_path):
    summary = run_summary(make_unconverged_run(tmp_path / "run"))
    assert summary["curvature_unconverged_steps"] == [30, 70]
    assert summary["flatness"]["eig_converged"] is False
