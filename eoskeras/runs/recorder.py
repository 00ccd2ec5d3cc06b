"""RunRecorder: the Keras callback that writes a run directory as training runs.

Every step's metrics are appended to ``metrics.jsonl``/``metrics.csv`` (every
``log_every`` steps, plus every step with a test evaluation or a curvature
measurement); curvature measurements go to ``curvature.jsonl`` with their
eigenvectors; a checkpoint is written every ``checkpoint_every`` steps. A
stop request (Ctrl-C, see ``request_stop``) is honoured at the end of the
current step: a checkpoint is written, then ``fit`` returns.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras

from eoskeras.runs import layout
from eoskeras.runs.checkpoint import Checkpointer
from eoskeras.runs.files import MetricsLog, append_line, atomic_save_npy, dumps, keep_jsonl_until
from eoskeras.runs.retention import thin_eigenvectors
from eoskeras.training.monitor import SharpnessMonitor
from eoskeras.training.thresholds import current_learning_rate

# A row's "step" is the number of updates done. Its val_*, lr-driven threshold and
# curvature belong to those weights, w_step; its loss and accuracy are what the step's own
# train_step computed *before* its update, at w_(step-1): "loss_step" says so in every row.
METRIC_COLUMNS = ("step", "loss_step", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "lambda_max", "threshold",
                  "sharpness_ratio", "similarity_first", "similarity_prev", "eig_residual", "eig_hvps",
                  "eig_converged")


class RunRecorder(keras.callbacks.Callback):
    def __init__(self, run_dir: Path, checkpointer: Checkpointer, monitor: SharpnessMonitor | None, *,
                 log_every: int = 1, checkpoint_every: int = 50, vectors_every: int = 1,
                 vectors_dtype: str = "float32") -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.checkpointer, self.monitor = checkpointer, monitor
        self.log_every, self.checkpoint_every = log_every, checkpoint_every
        self.vectors_every, self.vectors_dtype = vectors_every, vectors_dtype  # see retention.py
        self.metrics = MetricsLog(self.run_dir / layout.METRICS_JSONL, self.run_dir / layout.METRICS_CSV, METRIC_COLUMNS)
        self.stop_requested = False
        self._curvature_written = 0

    def request_stop(self) -> None:
        """Finish the current step, checkpoint, and end training (signal-safe)."""
        self.stop_requested = True

    def resume_from(self, step: int) -> None:
        """Forget what was written after the checkpoint at ``step``."""
        self.metrics.keep_until(step)
        keep_jsonl_until(self.run_dir / layout.CURVATURE, step)
        self._curvature_written = len(self.monitor.records) if self.monitor else 0

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _flush_curvature(self) -> bool:
        if self.monitor is None:
            return False
        new = self.monitor.records[self._curvature_written:]
        for record in new:
            append_line(self.run_dir / layout.CURVATURE, dumps({k: v for k, v in record.items() if k != "_vectors"}))
            if "_vectors" in record:
                atomic_save_npy(self.run_dir / layout.eigenvector_file(record["step"]),
                                record["_vectors"].astype(self.vectors_dtype))
                thin_eigenvectors(self.run_dir, record["step"], self.monitor.records[0]["step"], self.monitor.every,
                                  self.vectors_every)
        self._curvature_written = len(self.monitor.records)
        return bool(new)

    def on_train_begin(self, logs=None):
        self._flush_curvature()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self._step()
        measured = self._flush_curvature()
        evaluated = "val_loss" in logs
        loss = float(logs.get("loss", 0.0))
        if step % self.log_every == 0 or measured or evaluated or self.model.stop_training or not math.isfinite(loss):
            row: dict[str, Any] = {"step": step, "lr": current_learning_rate(self.model.optimizer, step - 1)}
            if "loss" in logs:
                row["loss_step"] = step - 1
            row.update({k: float(v) for k, v in logs.items() if k in METRIC_COLUMNS})
            if not measured:
                # Logs may hold an earlier measurement (the one before step 1 arrives with step 1's
                # logs, and a carrying monitor repeats it): record curvature only where measured.
                for key in METRIC_COLUMNS[METRIC_COLUMNS.index("lambda_max"):]:
                    row.pop(key, None)
            self.metrics.append(row)
        if self.stop_requested:
            self.model.stop_training = True
        if self.stop_requested or step % self.checkpoint_every == 0 or self.model.stop_training:
            self.checkpointer.save(step)

    def on_train_end(self, logs=None):
        self._flush_curvature()
        self.checkpointer.save(self._step())
