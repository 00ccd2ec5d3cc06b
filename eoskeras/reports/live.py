"""RichProgress: a live rich display of full-batch training (one epoch = one step).

On a terminal it shows a progress bar (step / max steps, elapsed, ETA) above a
one-row table of the latest loss, accuracies, λ_max against the stability
threshold, and eigenvector similarity. On anything else (CI logs, files) it
prints a plain line every few steps instead, so logs stay readable.

Keras does not call ``on_train_end`` when ``fit`` raises, so use the callback
as a context manager to be sure the live display stops:

```python
with RichProgress(total_steps=500) as progress:
    model.fit_full_batch(x, y, steps=500, callbacks=[monitor, progress])
```
"""
from __future__ import annotations

import math
import time
from typing import Any

import keras
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.table import Table

from eoskeras.reports.formatting import fmt, fmt_seconds, styled

# (logs key, column heading, format): what the display shows, in order
SHOWN = (
    ("loss", "loss", ".4g"),
    ("accuracy", "accuracy", "%"),
    ("val_loss", "val loss", ".4g"),
    ("val_accuracy", "val accuracy", "%"),
    ("lambda_max", "λ_max", ".4g"),
    ("threshold", "threshold", ".4g"),
    ("sharpness_ratio", "λ_max / threshold", ".3f"),
    ("similarity_first", "similarity to first", ".3f"),
)
# the monitor carries curvature forward between measurements and says from which step
CURVATURE_STEP = "curvature_step"
CONVERGED = "eig_converged"  # 0 when the latest eigen-solve ran out of HVPs
KEPT_KEYS = frozenset(key for key, _, _ in SHOWN) | {CURVATURE_STEP, CONVERGED}
NOT_CONVERGED = "λ_max NOT CONVERGED"


def _format(value: float, spec: str) -> str:
    return fmt(value, percent=True) if spec == "%" else fmt(value, spec)


class RichProgress(keras.callbacks.Callback):
    """Live progress of ``model.fit`` where each epoch is one optimizer step.

    Args:
        total_steps: the run's maximum number of steps (the bar's end).
        initial_step: steps already done (a resumed run starts its bar there).
        console: where to draw; a new ``rich.console.Console()`` by default.
        refresh_per_second: redraws per second of the live display.
        plain_every: steps between plain lines when the console is not a
            terminal; by default about 20 lines per run.

    Example: ``model.fit(x, y, epochs=200, callbacks=[RichProgress(200)])``.
    """

    def __init__(self, total_steps: int, initial_step: int = 0, console: Console | None = None,
                 refresh_per_second: float = 4.0, plain_every: int | None = None) -> None:
        super().__init__()
        self.total_steps, self.initial_step = total_steps, initial_step
        self.console = console or Console()
        self.refresh_per_second = refresh_per_second
        self.plain_every = plain_every or max(1, (total_steps - initial_step) // 20)
        self.step = initial_step
        self.latest: dict[str, float] = {}
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._fit_start_step = initial_step
        self._printed_step: int | None = None

    # ------------------------------------------------------------------ Keras
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.close()  # a second fit() with the same callback starts a fresh display
        self._started, self._fit_start_step = time.monotonic(), self.step
        if not self.console.is_terminal:
            return
        self._progress = Progress(TextColumn("[bold]step"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
        self._task = self._progress.add_task("training", total=self.total_steps, completed=self.step)
        self._live = Live(self._renderable(), console=self.console, refresh_per_second=self.refresh_per_second)
        self._live.start()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # count calls rather than trust ``epoch``: fit() may or may not be given initial_epoch
        self.step += 1
        for key, value in (logs or {}).items():
            if key in KEPT_KEYS:
                self.latest[key] = float(value)  # also converts numpy and tensor scalars
        if self._live is not None:
            self._progress.update(self._task, completed=self.step)
            self._live.update(self._renderable())
        elif (self.step - self.initial_step) % self.plain_every == 0 or self.step >= self.total_steps:
            self._print_plain()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._live is None and self._printed_step != self.step:
            self._print_plain()  # the last state, whatever the stride
        self.close()

    # ----------------------------------------------------------------- public
    @property
    def active(self) -> bool:
        """True while the live display is drawing."""
        return self._live is not None

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        if self._live is not None:
            self._live.update(self._renderable())
            self._live.stop()
        self._live = self._progress = self._task = None

    def __enter__(self) -> "RichProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- private
    def _renderable(self) -> RenderableType:
        table = Table(show_edge=False, pad_edge=False)
        shown = [(key, heading, spec) for key, heading, spec in SHOWN if key in self.latest]
        for _, heading, _ in shown:
            table.add_column(heading, justify="right")
        ratio = self.latest.get("sharpness_ratio", math.nan)
        # at or above 1 the run is at the edge of stability: worth a glance
        ratio_style = "bold yellow" if ratio >= 1 else ""
        table.add_row(*(styled(_format(self.latest[key], spec), ratio_style if key == "sharpness_ratio" else "")
                        for key, _, spec in shown))
        if CURVATURE_STEP in self.latest:
            table.caption = f"curvature measured at step {self.latest[CURVATURE_STEP]:.0f}"
            if self.latest.get(CONVERGED) == 0:
                table.caption += f" ({NOT_CONVERGED}: HVP budget ran out)"
        return Group(self._progress, table) if shown else Group(self._progress)

    def _print_plain(self) -> None:
        done = self.step - self._fit_start_step
        elapsed = time.monotonic() - self._started
        eta = elapsed / done * (self.total_steps - self.step) if done else None
        parts = [f"step {self.step}/{self.total_steps}"]
        parts += [f"{heading} {_format(self.latest[key], spec)}" for key, heading, spec in SHOWN if key in self.latest]
        if self.latest.get(CONVERGED) == 0:
            parts.append(NOT_CONVERGED)
        parts.append(f"elapsed {fmt_seconds(elapsed)}, ETA {fmt_seconds(eta)}")
        # markup/highlighting off: the line goes to a log file verbatim
        self.console.print(" | ".join(parts), markup=False, highlight=False, soft_wrap=True)
        self._printed_step = self.step
