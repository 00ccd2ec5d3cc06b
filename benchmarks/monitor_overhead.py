"""Monitoring cost on the quickstart recipe, and warm against cold eigensolves.

Run: ``python benchmarks/monitor_overhead.py`` (90–128 s on 2 CPU cores in two runs on 2026-12-02).

Part 1 trains recipes/quickstart.yaml through the runner with curvature
monitoring on (the recipe's top-5 every 10 steps, tol 1e-3), on with the
tracker driven from the host instead of held in one graph call, on with tol
bounding the eigenvalues' error instead of the residuals
(``curvature.criterion=eigenvalue``), and off, in turn,
``REPEATS`` times each, with the end-of-run flatness report off in both, and
reports the medians of wall time, the monitor's own seconds and HVPs, and the
overhead as a share of the monitored run's wall time. Goal: <= 35 %.

Part 2 follows the same training run and, at every measurement, solves for
the top 5 warm as the monitor does (``EigenTracker``, started from the
previous eigenvectors, in one graph call that holds the linearisation), warm
driven from the host (``hold=False``: a graph call per block of products and
NumPy between them, split into the two), and cold (block Lanczos from a
random start), at the same tolerance. Goal: warm needs <= 1/2 of the cold
HVPs. It also times the held measurement's products alone, in one block call
of as many columns, and part 3 prints the overhead part 1's runs would have
had if each measurement cost only that: the floor that faster linear algebra
alone cannot go below.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import eoskeras
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl
from eoskeras.runs.runner import prepare, recipe_optimizer, resolve_learning_rate, run_recipe
from _common import machine, print_table

REPEATS = 3


def timed_run(overrides: list[str], out: Path, hold: bool = True) -> tuple[float, float, int, int]:
    recipe = load_recipe(bundled_recipes()["quickstart"], ["flatness.enabled=false", *overrides])
    # The monitor's tracker holds its linearisation by default; hold=False runs the same
    # solver driven from the host, for comparison in the same process.
    defaults = eoskeras.EigenTracker.__init__.__kwdefaults__
    defaults["hold"] = hold
    try:
        start = time.perf_counter()
        run_recipe(recipe, out)
        wall = time.perf_counter() - start
    finally:
        defaults["hold"] = True
    records = read_jsonl(out / layout.CURVATURE)
    return wall, sum(r["seconds"] for r in records), sum(r["eig_hvps"] for r in records), len(records)


class TimedProducts:
    """The oracle, timing its block products (the tracker's only HVP calls)."""

    def __init__(self, oracle) -> None:
        self.oracle, self.dim, self.seconds = oracle, oracle.dim, 0.0

    def describe(self) -> dict:
        return self.oracle.describe()

    def matmat(self, block):
        start = time.perf_counter()
        out = self.oracle.matmat(block)
        self.seconds += time.perf_counter() - start
        return out


def overhead() -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Interleaved repeats, medians: the same run's wall time varies by ~20 % on a 2-core VM.
    arms = {"on": ([], True), "on, driven from the host": ([], False),
            "on, criterion eigenvalue": (["curvature.criterion=eigenvalue"], True),
            "off": (["curvature.enabled=false"], True)}
    runs: dict[str, list[tuple[float, float, int, int]]] = {key: [] for key in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(REPEATS):
            for number, (key, (overrides, hold)) in enumerate(arms.items()):
                runs[key].append(timed_run(overrides, Path(tmp) / f"{number}_{repeat}", hold))
    median = {key: tuple(statistics.median(r[i] for r in runs[key]) for i in range(4)) for key in runs}
    off = median["off"]
    recipe = load_recipe(bundled_recipes()["quickstart"])
    c, steps = recipe.curvature, recipe.training.max_steps
    rows = [[key, run[0], run[1], run[3], run[2] / run[3], run[1] / run[3], "", (run[0] - off[0]) / run[0]]
            for key, run in median.items() if key != "off"]
    print_table(f"quickstart, {steps} steps, top-{c.top_k} every {c.every} steps, tol {c.tol} (medians of {REPEATS})",
                ["monitoring", "wall s", "monitor s", "measurements", "HVPs / measurement", "monitor s / measurement",
                 "training s / step (off)", "overhead (on-off)/on"],
                [*rows, ["off", off[0], 0.0, 0, "", "", off[0] / steps, 0.0]])
    return median["on"], off


def warm_against_cold() -> float:
    recipe = load_recipe(bundled_recipes()["quickstart"])
    c = recipe.curvature
    prepared = prepare(recipe)
    oracle = prepared.oracle
    prepared.model.compile(optimizer=recipe_optimizer(recipe, resolve_learning_rate(prepared)["lr"]))
    # The monitor's tracker (one graph call a measurement) and the same solver driven from the host.
    held = eoskeras.EigenTracker(c.top_k, tol=c.tol, seed=recipe.seed)
    host = eoskeras.EigenTracker(c.top_k, tol=c.tol, seed=recipe.seed, hold=False)
    for tracker in (held, host):
        tracker.update(oracle)  # the cold first measurement, as the monitor's (and the held graph's trace)
    rows, seconds, hvps = [], {key: [] for key in ("held", "host", "cold", "products", "host products")}, {}
    rng = np.random.default_rng(0)
    for measurement in range(1, recipe.training.max_steps // c.every + 1):
        prepared.model.fit_full_batch(prepared.data.x_train, prepared.data.y_train, steps=c.every)
        timed = TimedProducts(oracle)
        order = [("held", held, oracle), ("host", host, timed)]
        for key, tracker, op in order if measurement % 2 else order[::-1]:
            start = time.perf_counter()
            warm = tracker.update(op)
            seconds[key].append(time.perf_counter() - start)
            hvps.setdefault(key, []).append(warm.num_hvps)
            if key == "held":
                spectrum = warm
        seconds["host products"].append(timed.seconds)
        # The same number of products in one block call: what the held measurement's own products cost.
        block = rng.standard_normal((oracle.dim, spectrum.num_hvps))
        start = time.perf_counter()
        oracle.hvp_block(block)
        seconds["products"].append(time.perf_counter() - start)
        start = time.perf_counter()
        cold = eoskeras.lanczos(oracle, k=c.top_k, tol=c.tol, seed=measurement)
        seconds["cold"].append(time.perf_counter() - start)
        hvps.setdefault("cold", []).append(cold.num_hvps)
        if measurement % 10 == 0:
            rows.append([measurement * c.every, spectrum.lambda_max, cold.lambda_max, spectrum.num_hvps, cold.num_hvps,
                         spectrum.converged and cold.converged])
    rows.append(["total", "", "", sum(hvps["held"]), sum(hvps["cold"]), ""])
    print_table(f"quickstart: top-{c.top_k} to tol {c.tol} every {c.every} steps, warm (tracker) and cold (Lanczos)",
                ["step", "warm λ_max", "cold λ_max", "warm HVPs", "cold HVPs", "both converged"], rows)
    median = {key: statistics.median(values) for key, values in seconds.items()}
    print(f"warm / cold over the run: HVPs {sum(hvps['held']) / sum(hvps['cold']):.3f}, "
          f"seconds {sum(seconds['held']) / sum(seconds['cold']):.3f}")
    print(f"a warm measurement (medians): held in one graph call {median['held']:.4f} s, driven from the host "
          f"{median['host']:.4f} s (its products {median['host products']:.4f} s, host work "
          f"{median['host'] - median['host products']:.4f} s; {statistics.mean(hvps['host']):.2f} HVPs against "
          f"{statistics.mean(hvps['held']):.2f}), held / host {median['held'] / median['host']:.3f}; "
          f"the held measurement's products alone, in one block call {median['products']:.4f} s")
    return median["products"]


def floors(on: tuple[float, ...], off: tuple[float, ...], products: float) -> None:
    # A run whose monitoring were each measurement's products alone, in one block call.
    only_products = off[0] + on[3] * products
    print_table("monitoring overhead (on-off)/on, measured and its floor",
                ["run", "wall s", "overhead"],
                [["measured (part 1)", on[0], (on[0] - off[0]) / on[0]],
                 ["products alone", only_products, (only_products - off[0]) / only_products]])


def main() -> None:
    print(machine())
    on, off = overhead()
    floors(on, off, warm_against_cold())


if __name__ == "__main__":
    main()
