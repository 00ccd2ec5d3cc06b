"""Monitoring cost on the quickstart recipe, and warm against cold eigensolves.

Run: ``python benchmarks/monitor_overhead.py`` (122–139 s on 2 CPU cores in three runs on 2026-12-02).

Part 1 trains recipes/quickstart.yaml through the runner with curvature
monitoring on (the recipe's top-5 every 10 steps, tol 1e-3) and off, in turn,
``REPEATS`` times each, with the end-of-run flatness report off in both, and
reports the medians of wall time, the monitor's own seconds and HVPs, and the
overhead as a share of the monitored run's wall time. Goal: <= 35 %.

Part 2 follows the same training run and, at every measurement, solves for
the top 5 both warm (``EigenTracker``, started from the previous
eigenvectors, as the monitor does) and cold (block Lanczos from a random
start), at the same tolerance. Goal: warm needs <= 1/2 of the cold HVPs.
It also splits a warm measurement into the oracle's products (the HVP
calls) and the solver's host work (NumPy), and part 3 prints the overhead
part 1's runs would have had without that host work, and with nothing but the
products: the floors that faster linear algebra alone cannot go below.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import statistics
import tempfile
import time
from pathlib import Path

import eoskeras
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl
from eoskeras.runs.runner import prepare, recipe_optimizer, resolve_learning_rate, run_recipe
from _common import machine, print_table

REPEATS = 3


def timed_run(overrides: list[str], out: Path) -> tuple[float, float, int, int]:
    recipe = load_recipe(bundled_recipes()["quickstart"], ["flatness.enabled=false", *overrides])
    start = time.perf_counter()
    run_recipe(recipe, out)
    wall = time.perf_counter() - start
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
    runs: dict[str, list[tuple[float, float, int, int]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(REPEATS):
            runs["on"].append(timed_run([], Path(tmp) / f"on{repeat}"))
            runs["off"].append(timed_run(["curvature.enabled=false"], Path(tmp) / f"off{repeat}"))
    on, off = (tuple(statistics.median(r[i] for r in runs[key]) for i in range(4)) for key in ("on", "off"))
    recipe = load_recipe(bundled_recipes()["quickstart"])
    c, steps = recipe.curvature, recipe.training.max_steps
    print_table(f"quickstart, {steps} steps, top-{c.top_k} every {c.every} steps, tol {c.tol} (medians of {REPEATS})",
                ["monitoring", "wall s", "monitor s", "measurements", "HVPs / measurement", "monitor s / measurement",
                 "training s / step (off)", "overhead (on-off)/on"],
                [["on", on[0], on[1], on[3], on[2] / on[3], on[1] / on[3], "", (on[0] - off[0]) / on[0]],
                 ["off", off[0], 0.0, 0, "", "", off[0] / steps, 0.0]])
    return on, off


def warm_against_cold() -> tuple[float, float]:
    recipe = load_recipe(bundled_recipes()["quickstart"])
    c = recipe.curvature
    prepared = prepare(recipe)
    prepared.model.compile(optimizer=recipe_optimizer(recipe, resolve_learning_rate(prepared)["lr"]))
    tracker = eoskeras.EigenTracker(c.top_k, tol=c.tol, seed=recipe.seed)
    tracker.update(prepared.oracle)  # the cold first measurement, as the monitor's
    rows, totals = [], {"warm": [0, 0.0], "cold": [0, 0.0]}
    products, host = [], []
    for measurement in range(1, recipe.training.max_steps // c.every + 1):
        prepared.model.fit_full_batch(prepared.data.x_train, prepared.data.y_train, steps=c.every)
        timed = TimedProducts(prepared.oracle)
        start = time.perf_counter()
        warm = tracker.update(timed)
        warm_s = time.perf_counter() - start
        products.append(timed.seconds)
        host.append(warm_s - timed.seconds)
        start = time.perf_counter()
        cold = eoskeras.lanczos(prepared.oracle, k=c.top_k, tol=c.tol, seed=measurement)
        cold_s = time.perf_counter() - start
        for key, spectrum, seconds in (("warm", warm, warm_s), ("cold", cold, cold_s)):
            totals[key][0] += spectrum.num_hvps
            totals[key][1] += seconds
        if measurement % 10 == 0:
            rows.append([measurement * c.every, warm.lambda_max, cold.lambda_max, warm.num_hvps, cold.num_hvps,
                         warm.converged and cold.converged])
    rows.append(["total", "", "", totals["warm"][0], totals["cold"][0], ""])
    print_table(f"quickstart: top-{c.top_k} to tol {c.tol} every {c.every} steps, warm (tracker) and cold (Lanczos)",
                ["step", "warm λ_max", "cold λ_max", "warm HVPs", "cold HVPs", "both converged"], rows)
    print(f"warm / cold over the run: HVPs {totals['warm'][0] / totals['cold'][0]:.3f}, "
          f"seconds {totals['warm'][1] / totals['cold'][1]:.3f}")
    print(f"a warm measurement (medians): products {statistics.median(products):.4f} s, "
          f"the solver's host work {statistics.median(host):.4f} s")
    return statistics.median(products), statistics.median(host)


def floors(on: tuple[float, ...], off: tuple[float, ...], products: float, host: float) -> None:
    # Part 1's monitored run less each measurement's host work (the files, logs and records
    # stay), and a run whose monitoring were the products alone.
    measurements = on[3]
    no_host = on[0] - measurements * host
    only_products = off[0] + measurements * products
    print_table("monitoring overhead (on-off)/on, measured and its floors",
                ["run", "wall s", "overhead"],
                [["measured (part 1)", on[0], (on[0] - off[0]) / on[0]],
                 ["without the solver's host work", no_host, (no_host - off[0]) / no_host],
                 ["products alone", only_products, (only_products - off[0]) / only_products]])


def main() -> None:
    print(machine())
    on, off = overhead()
    floors(on, off, *warm_against_cold())


if __name__ == "__main__":
    main()
