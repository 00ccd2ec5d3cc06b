"""Shared helpers of the benchmark scripts: timing, table printing, and
what else used the machine's cores while a benchmark ran."""
from __future__ import annotations

import atexit
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, NamedTuple

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
    """The machine's one-line description. The first call also starts
    ``CoreUse``, whose report prints when the benchmark exits."""
    import tensorflow as tf

    global _core_use
    if _core_use is None:
        _core_use = CoreUse()
        atexit.register(lambda: print(_core_use.report()))
    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU(s): {gpus[0].name}" if gpus else "CPU only"
    return f"{platform.node()} | {os.cpu_count()} CPU cores | {device} | TF {tf.__version__}"


_core_use: "CoreUse | None" = None
# Above this share of the machine's cores, other processes or the hypervisor took enough to
# move the timings. On the 2-core VM, with one NumPy matrix-product loop running alongside
# (54 % of the cores), the peer MLP's HVP took 86 ms in TensorFlow against 37 alone, and
# 225 ms in PyTorch against 36 (medians of 7 × 10, 2026-12-02).
SHARED_ABOVE = 0.05


class CoreSample(NamedTuple):
    wall: float      # seconds, perf_counter
    own: float       # this process's CPU seconds, all its threads
    busy: float      # the machine's CPU seconds busy since boot, all cores
    steal: float     # CPU seconds the hypervisor gave to other guests since boot


def core_sample(stat: Path = Path("/proc/stat")) -> CoreSample | None:
    """Now, for ``CoreUse``; None where /proc/stat is missing (not Linux)."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: user includes guest time.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return CoreSample(time.perf_counter(), own.user + own.system, (user + nice + system + irq + softirq) / ticks,
                      steal / ticks)


class CoreUse:
    """How much of the machine's cores this process, other processes and the
    hypervisor (steal) took between construction and ``report()``: timings
    from a run that shared its cores are not comparable with others."""

    def __init__(self, sample: Callable[[], CoreSample | None] = core_sample, cores: int | None = None) -> None:
        self._sample, self.cores = sample, cores or os.cpu_count() or 1
        self.start = sample()

    def shares(self) -> dict[str, float] | None:
        """Shares of cores × wall time: ``own``, ``others`` and ``steal``."""
        end = self._sample()
        if self.start is None or end is None or end.wall <= self.start.wall:
            return None
        capacity = self.cores * (end.wall - self.start.wall)
        own = end.own - self.start.own
        # The busy count includes this process; tick rounding can make the rest slightly negative.
        others = max(end.busy - self.start.busy - own, 0.0)
        return {"own": own / capacity, "others": others / capacity, "steal": (end.steal - self.start.steal) / capacity}

    def report(self) -> str:
        shares = self.shares()
        if shares is None:
            return "cores during this run: not measured (no /proc/stat)"
        line = (f"cores during this run ({self.cores}): this process {shares['own']:.1%}, other processes "
                f"{shares['others']:.1%}, the hypervisor's steal {shares['steal']:.1%}")
        if max(shares["others"], shares["steal"]) > SHARED_ABOVE:
            line += (f"\nWARNING: more than {SHARED_ABOVE:.0%} of the cores went elsewhere: these timings are "
                     "not comparable with a run on an idle machine")
        return line


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
