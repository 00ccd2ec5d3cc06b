"""Checkpoints that resume a run exactly: weights, optimizer slots, the
eigen-tracker's warm-start vectors and the stopping rules' progress.

``tf.train.Checkpoint`` holds the TensorFlow state; the callbacks' state goes
to ``state_<step>.npz`` and ``state.json``. ``state.json`` is replaced
atomically *last*, so it always names a complete checkpoint.

What never changes or is already on disk is not written again: the first
measurement's eigenvectors go to ``first_vectors.npz`` once, and the
monitor's records are read back from ``curvature.jsonl`` (which the recorder
writes before each checkpoint; ``state.json`` keeps their count), so what a
checkpoint writes does not grow with the number of measurements.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from eoskeras.runs import layout
from eoskeras.runs.files import RunWriteError, atomic_save_npz, atomic_write_json, read_jsonl, writing
from eoskeras.training.monitor import SharpnessMonitor
from eoskeras.training.stopping import StopConditions


class CheckpointError(Exception):
    """A checkpoint is missing, damaged or does not fit the run."""


_REMEDY = "start the run again with --overwrite, or choose another --out"
FIRST_VECTORS = "first_vectors.npz"


def read_record(path: Path) -> dict[str, Any]:
    """The JSON object a run wrote to ``path`` (``state.json``, ``result.json``),
    or a ``CheckpointError`` when it is missing or damaged."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"cannot resume: {path} is missing or damaged ({err}); {_REMEDY}") from err
    if not isinstance(record, dict):
        raise CheckpointError(f"cannot resume: {path} holds {type(record).__name__}, not a JSON object; {_REMEDY}")
    return record


def milestone_prefixes(directory: Path) -> list[Path]:
    """Checkpoint prefixes of the kept milestone weights, by step."""
    return sorted(p.with_suffix("") for p in (Path(directory) / layout.MILESTONES).glob("step_*.index"))


def milestone_step(prefix: Path) -> int:
    return int(prefix.name.split("_")[1])


class Checkpointer:
    def __init__(self, run_dir: Path, network: keras.Model, optimizer: keras.optimizers.Optimizer,
                 monitor: SharpnessMonitor | None, stop: StopConditions, keep: int = 2) -> None:
        self.directory = Path(run_dir) / layout.CHECKPOINTS
        self.curvature = Path(run_dir) / layout.CURVATURE
        self.monitor, self.stop, self.keep = monitor, stop, keep
        self.network = network
        self._checkpoint = tf.train.Checkpoint(model=network, optimizer=optimizer)
        self._manager = tf.train.CheckpointManager(self._checkpoint, str(self.directory), max_to_keep=keep)
        self.last_step: int | None = None

    def save(self, step: int, extra: dict[str, Any] | None = None) -> None:
        if step == self.last_step:
            return
        try:
            prefix = self._manager.save(checkpoint_number=step)
        except tf.errors.OpError as err:
            # A full disk or a file-size limit: state.json still names the last complete checkpoint.
            raise RunWriteError(f"cannot write checkpoint {step} in {self.directory}: {err.message}") from err
        state: dict[str, Any] = {"step": step, "checkpoint": Path(prefix).name, "stop": self.stop.state(), **(extra or {})}
        arrays_file = self.directory / f"state_{step:07d}.npz"
        if self.monitor is not None:
            arrays = self.monitor.state()
            state["monitor"] = {"records": len(self.monitor.records)}
            first = arrays.pop("first", None)
            if first is not None:
                if not (self.directory / FIRST_VECTORS).exists():
                    atomic_save_npz(self.directory / FIRST_VECTORS, first=first)  # synced: state.json names it
                state["first_vectors"] = FIRST_VECTORS
            previous, tracker = arrays.get("previous"), arrays.get("tracker")
            if (previous is not None and tracker is not None
                    and np.array_equal(previous, tracker[:, :previous.shape[1]])):
                # The latest measurement's vectors lead the tracker's warm start: store them once.
                del arrays["previous"]
                state["previous_columns"] = previous.shape[1]
            with writing(arrays_file), open(arrays_file, "wb") as f:  # named by state.json only once whole
                np.savez(f, **arrays)
            state["arrays"] = arrays_file.name
        atomic_write_json(self.directory / "state.json", state)
        self.last_step = step
        self._prune_arrays()
        self._save_milestone(step)

    def _save_milestone(self, step: int) -> None:
        """Keep the network's weights at steps at least twice the last kept
        one (10, 20, 40, ... for checkpoints every 10 steps): a log-spaced
        history, for views of the run's middle (landscape slices) that the
        rolling checkpoints forget."""
        kept = [milestone_step(p) for p in milestone_prefixes(self.directory)]
        if step > 0 and (not kept or step >= 2 * max(kept)):
            tf.train.Checkpoint(model=self.network).write(
                str(self.directory / layout.MILESTONES / f"step_{step:07d}"))

    def restore(self) -> dict[str, Any]:
        """Restore the newest complete checkpoint; returns its state record."""
        state = read_record(self.directory / "state.json")
        try:
            self._checkpoint.restore(str(self.directory / state["checkpoint"])).assert_existing_objects_matched()
            if self.monitor is not None and "monitor" in state:
                with np.load(self.directory / state["arrays"]) as stored:
                    arrays = dict(stored)
                if "first_vectors" in state:
                    with np.load(self.directory / state["first_vectors"]) as stored:
                        arrays["first"] = stored["first"]
                if "previous_columns" in state:
                    arrays["previous"] = arrays["tracker"][:, :state["previous_columns"]]
                elif state.get("previous_is_tracker"):  # written before the warm start held guard vectors
                    arrays["previous"] = arrays["tracker"]
                self.monitor.load_state(self._monitor_records(state), arrays)
            self.stop.load_state(state["stop"])
        # TensorFlow reports a truncated checkpoint file as an IndexError; TypeError: a field of the wrong type.
        except (OSError, KeyError, TypeError, IndexError, ValueError, AssertionError, tf.errors.OpError) as err:
            raise CheckpointError(f"cannot resume from {self.directory}: {type(err).__name__}: {err}; {_REMEDY}"
                                  ) from err
        self.last_step = state["step"]
        return state

    def _monitor_records(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """The monitor's records: stored inline by older checkpoints, else the
        first ``records`` rows of ``curvature.jsonl``."""
        count = state["monitor"]["records"]
        if isinstance(count, list):
            return count
        rows = [r for r in read_jsonl(self.curvature) if r.get("step", 0) <= state["step"]]
        if len(rows) != count:
            raise CheckpointError(f"cannot resume: {self.curvature} holds {len(rows)} measurements up to step "
                                  f"{state['step']}, the checkpoint {count}; {_REMEDY}")
        return rows

    def _prune_arrays(self) -> None:
        # Only the arrays state.json names are ever restored (it is replaced after they are written).
        for f in self.directory.glob("state_*.npz"):
            if int(f.stem.split("_")[1]) != self.last_step:
                f.unlink(missing_ok=True)
