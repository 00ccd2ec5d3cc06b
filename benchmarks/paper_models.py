"""Cost of the paper's BatchNorm networks on a CPU: a training step against a
curvature measurement, side by side.

Run: ``python benchmarks/paper_models.py [--examples 100 500] [--top-k 3]``.

For vgg10_base8_bn and resnet20_base8 on the embedded digits (the
``digits_vgg`` / ``digits_resnet`` recipes' models and loss), prints the median
seconds of one full-batch GD step (``FullBatchModel`` under ``fit``), one
gradient and one HVP of the trained loss (batch statistics, one chunk), the
HVP/gradient ratio, and a top-k measurement as the monitor makes it: cold
(random start) and warm (after 10 GD steps at the recipe's 2 × 2/λ₀), in
HVPs and seconds, and as a multiple of a step.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import argparse
import time

import numpy as np
import tensorflow as tf

import eoskeras
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs.runner import prepare, recipe_optimizer, resolve_learning_rate
from _common import machine, median_seconds, print_table


def measure(name: str, examples: int, top_k: int) -> list[object]:
    recipe = load_recipe(bundled_recipes()[name], [f"data.train_size={examples}",
                                                   f"training.physical_batch_size={examples}"])
    p = prepare(recipe)
    lr = resolve_learning_rate(p)["lr"]
    x, y = tf.constant(p.data.x_train), tf.constant(p.data.y_train)
    p.model.compile(optimizer=recipe_optimizer(recipe, lr))
    p.model.fit_full_batch(x, y, steps=2)  # trace
    start = time.perf_counter()
    p.model.fit_full_batch(x, y, steps=10, initial_step=2)
    step = (time.perf_counter() - start) / 10
    grad = median_seconds(p.oracle.loss_and_gradient, repeats=3)
    v = np.random.default_rng(0).standard_normal(p.oracle.dim)
    hvp = median_seconds(lambda: p.oracle.hvp(v), repeats=3)
    tracker = eoskeras.EigenTracker(top_k, tol=1e-3)
    start = time.perf_counter()
    cold = tracker.update(p.oracle)
    cold_s = time.perf_counter() - start
    p.model.fit_full_batch(x, y, steps=10, initial_step=12)
    start = time.perf_counter()
    warm = tracker.update(p.oracle)
    warm_s = time.perf_counter() - start
    return [name, examples, step, grad, hvp, hvp / grad, f"{cold.num_hvps} / {cold_s:.1f}",
            f"{warm.num_hvps} / {warm_s:.1f}", warm_s / step]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, nargs="+", default=[100])
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    rows = [measure(name, n, args.top_k) for n in args.examples for name in ("digits_vgg", "digits_resnet")]
    print_table(f"paper models on the embedded digits, top-{args.top_k} at tol 1e-3",
                ["recipe", "examples", "GD step s", "gradient s", "HVP s", "HVP / gradient",
                 "cold top-k HVPs / s", "warm top-k HVPs / s", "warm measurement / step"], rows)


if __name__ == "__main__":
    main()
