"""The files of a run directory: one place that names them.

A run directory holds everything needed to re-render a report, resume the
run, or repeat it:

- ``recipe.yaml``      the resolved recipe (the learning rate as resolved)
- ``environment.json`` versions, devices, strategy, seed, command line
- ``metrics.jsonl``    one JSON object per step, appended as training runs:
                       step, loss, accuracy, lr, val_loss/val_accuracy when
                       evaluated, and the curvature keys when measured
- ``metrics.csv``      the same rows as CSV (fixed columns, appended)
- ``curvature.jsonl``  one JSON object per curvature measurement (step,
                       eigenvalues, threshold, sharpness_ratio, eig_residual,
                       eig_hvps, similarity_prev, similarity_first,
                       cosine_first, seconds, preconditioned)
- ``eigenvectors/``    ``step_XXXXXXX.npy``: the top-k eigenvectors (n × k)
- ``checkpoints/``     ``tf.train.Checkpoint`` files and ``state.json``;
                       ``milestones/step_XXXXXXX``: the network's weights at
                       log-spaced steps (each at least twice the last)
- ``landscape/``       ``eoskeras landscape RUN_DIR``: slices (JSON) at the
                       start, middle and end
- ``tensorboard/``     TensorBoard event files
- ``density.npz``      final spectral density: grid, density, nodes, weights
- ``result.json``      status (see STATUSES),
                       stop_reason, stop_step, wall_seconds, initial
                       sharpness, resolved lr, threshold, final flatness
- ``plots/``           PNG plots
- ``spectrum_<operator>.json``  ``eoskeras spectrum RUN_DIR --operator ...``
                       (hessian/ggn/fisher): top-k, trace, per-layer spectra

A sweep directory holds one run directory per learning rate
(``lr_<index>_<eta>``) plus ``sweep.json`` / ``sweep.csv`` (one ``SweepRow``
per point) and its own ``plots/``.
"""
from __future__ import annotations

from dataclasses import dataclass

RECIPE = "recipe.yaml"
ENVIRONMENT = "environment.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVATURE = "curvature.jsonl"
EIGENVECTORS = "eigenvectors"
CHECKPOINTS = "checkpoints"
MILESTONES = "milestones"
LANDSCAPE = "landscape"
TENSORBOARD = "tensorboard"
DENSITY = "density.npz"
RESULT = "result.json"
PLOTS = "plots"
SWEEP_JSON = "sweep.json"
SWEEP_CSV = "sweep.csv"

# How a run ended: the accuracy/loss goal reached, out of steps, stalled (the
# paper's rule: mean training accuracy below a floor), diverged, interrupted.
STATUSES = ("running", "goal_reached", "max_steps", "stalled", "diverged", "interrupted")
# StopConditions.outcome -> result status.
OUTCOME_STATUS = {"goal": "goal_reached", "max_steps": "max_steps", "stalled": "stalled", "diverged": "diverged"}
# Statuses of a run that has ended and needs no resuming.
FINISHED = tuple(OUTCOME_STATUS.values())


def eigenvector_file(step: int) -> str:
    return f"{EIGENVECTORS}/step_{step:07d}.npy"


def spectrum_file(operator: str) -> str:
    return f"spectrum_{operator}.json"


@dataclass(frozen=True)
class SweepRow:
    """One point of a sweep as ``sweep.json`` and ``sweep.csv`` record it; the
    fields, in this order, are the CSV's columns. A point not run yet has its
    learning rate (``lr`` or ``lr_relative``), ``run_dir`` and ``status`` only."""

    lr: float | None = None
    lr_relative: float | None = None
    eta_lambda0_over_2: float | None = None
    final_sharpness: float | None = None
    trace: float | None = None
    similarity_start_end: float | None = None
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    steps: int | None = None
    status: str = "pending"
    stop_reason: str | None = None
    run_dir: str = ""
