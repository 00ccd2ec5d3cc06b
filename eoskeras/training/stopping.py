"""StopConditions: the paper's stopping rules, and divergence as a result.

Example:

```python
stop = StopConditions(train_accuracy=0.999, patience=2, divergence_factor=1e3)
model.fit_full_batch(x, y, steps=5000, callbacks=[stop])
stop.reason, stop.step, stop.outcome   # outcome: "goal", "max_steps", "stalled", "diverged"
```
"""
from __future__ import annotations

import math

import keras


class StopConditions(keras.callbacks.Callback):
    """End training on a goal reached or on divergence, recording why and when.

    Args:
        train_accuracy: stop once the training accuracy is at least this for
            ``patience`` consecutive epochs (= steps in full-batch training).
        loss_below: stop once the training loss is below this.
        max_steps: stop after this many optimiser steps.
        divergence_factor: diverged when the loss exceeds this multiple of
            the first step's loss; NaN/inf losses are always divergence.
        stall_accuracy, stall_window: stalled when the mean training accuracy
            over the last ``stall_window`` epochs stays below ``stall_accuracy``
            (the paper: 0.11 over 100).

    ``outcome`` tells why training ended: ``"goal"`` (an accuracy or loss
    goal was reached), ``"max_steps"`` (ran out of steps), ``"stalled"``,
    ``"diverged"``; None while training goes on.
    """

    def __init__(self, *, train_accuracy: float | None = 0.999, patience: int = 2, loss_below: float | None = None,
                 max_steps: int | None = None, divergence_factor: float | None = 1e3,
                 stall_accuracy: float | None = None, stall_window: int = 100) -> None:
        super().__init__()
        self.train_accuracy, self.patience, self.loss_below = train_accuracy, patience, loss_below
        self.max_steps, self.divergence_factor = max_steps, divergence_factor
        self.stall_accuracy, self.stall_window = stall_accuracy, stall_window
        self.reason: str | None = None
        self.step: int | None = None
        self.outcome: str | None = None
        self._initial_loss: float | None = None
        self._streak = 0
        self._accuracies: list[float] = []

    def _steps_done(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    @property
    def diverged(self) -> bool:
        return self.outcome == "diverged"

    def _stop(self, reason: str, outcome: str) -> None:
        if self.reason is None:
            self.reason, self.step, self.outcome = reason, self._steps_done(), outcome
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self._stop(f"diverged: training loss is {loss}", "diverged")
            return
        if self._initial_loss is None:
            self._initial_loss = loss
        elif self.divergence_factor and loss > self.divergence_factor * max(self._initial_loss, 1e-12):
            self._stop(f"diverged: training loss {loss:.4g} > {self.divergence_factor:g} x initial "
                       f"{self._initial_loss:.4g}", "diverged")
        if self.max_steps is not None and self._steps_done() >= self.max_steps:
            self._stop(f"reached max_steps={self.max_steps}", "max_steps")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        accuracy, loss = logs.get("accuracy"), logs.get("loss")
        if accuracy is not None:
            self._accuracies.append(float(accuracy))
            self._streak = self._streak + 1 if self.train_accuracy and accuracy >= self.train_accuracy else 0
            if self.train_accuracy and self._streak >= self.patience:
                self._stop(f"train accuracy >= {self.train_accuracy:g} for {self.patience} consecutive epochs", "goal")
            window = self._accuracies[-self.stall_window:]
            if (self.stall_accuracy is not None and len(window) == self.stall_window
                    and sum(window) / len(window) < self.stall_accuracy):
                self._stop(f"stalled: mean train accuracy over {self.stall_window} epochs < "
                           f"{self.stall_accuracy:g}", "stalled")
        if self.loss_below is not None and loss is not None and loss < self.loss_below:
            self._stop(f"train loss < {self.loss_below:g}", "goal")

    def state(self) -> dict:
        """JSON-ready progress of the conditions (resume)."""
        return {"initial_loss": self._initial_loss, "streak": self._streak, "accuracies": self._accuracies[-self.stall_window:]}

    def load_state(self, state: dict) -> None:
        self._initial_loss, self._streak = state["initial_loss"], state["streak"]
        self._accuracies = list(state["accuracies"])

    def on_train_end(self, logs=None):
        if self.reason is None:
            self.reason, self.step, self.outcome = "completed all steps", self._steps_done(), "max_steps"
