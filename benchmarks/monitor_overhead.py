"""Monitoring overhead on the quickstart recipe with its default settings.

Run: ``python benchmarks/monitor_overhead.py`` (about three minutes on 2 CPU cores).

Trains recipes/quickstart.yaml through the runner twice — curvature
monitoring on (the recipe's settings) and off — with the end-of-run flatness
report off in both, and reports wall time, the monitor's own measured
seconds, and the overhead as a share of the monitored run's wall time.
Goal: <= 25 %.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import tempfile
import time
from pathlib import Path

from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl
from eoskeras.runs.runner import run_recipe
from _common import machine, print_table


def timed_run(overrides: list[str], out: Path) -> tuple[float, float, int]:
    recipe = load_recipe(bundled_recipes()["quickstart"], ["flatness.enabled=false", *overrides])
    start = time.perf_counter()
    run_recipe(recipe, out)
    wall = time.perf_counter() - start
    records = read_jsonl(out / layout.CURVATURE)
    return wall, sum(r["seconds"] for r in records), sum(r["eig_hvps"] for r in records)


def main() -> None:
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        on = timed_run([], Path(tmp) / "on")
        off = timed_run(["curvature.enabled=false"], Path(tmp) / "off")
    recipe = load_recipe(bundled_recipes()["quickstart"])
    c = recipe.curvature
    print_table(f"quickstart, {recipe.training.max_steps} steps, top-{c.top_k} every {c.every} steps, tol {c.tol}",
                ["monitoring", "wall s", "monitor s", "HVPs", "overhead (on-off)/on"],
                [["on", on[0], on[1], on[2], (on[0] - off[0]) / on[0]], ["off", off[0], 0.0, 0, 0.0]])


if __name__ == "__main__":
    main()
