"""Shared helpers of the benchmark scripts: timing and table printing."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn`` after ``warmup`` untimed calls (tracing)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU(s): {gpus[0].name}" if gpus else "CPU only"
    return f"{platform.node()} | {os.cpu_count()} CPU cores | {device} | TF {tf.__version__}"


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    # Benchmark figures go into notes and logs: never cut a number to fit a narrow pipe.
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)
    console.print(table)
