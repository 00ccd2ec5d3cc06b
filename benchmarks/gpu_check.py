"""GPU check: the paper's CIFAR-10 recipes at their real size, on a GPU.

Run: ``python benchmarks/gpu_check.py [--steps 20]`` on a machine with a GPU
(``--cpu --size 40`` runs the same code on a CPU at a toy size, as a smoke test).

For each of ``cifar10_resnet``, ``cifar10_vgg`` and ``cifar10_clipped_adam``
(5,120 training images; CIFAR-10 from tensorflow-datasets when it is on disk,
else ``tfds.testing.mock_data`` images of the same shapes: curvature and
timing do not depend on pixel values being real):

1. resolves the learning rate as ``eoskeras train`` does and checks it
   independently: λ₀ recomputed in float64 from finite differences of the train
   step's own accumulated gradient must give η·λ₀/c = lr_relative within 2 %
   (c: 2 for GD, (2 + 2β₁)/(1 − β₁) for Adam, on P⁻¹H);
2. times a full-batch step, a gradient, an HVP and a block of 10 HVPs on the
   Hessian's examples, and reports the peak GPU memory.

Without a GPU (and without ``--cpu``) it says so and exits with status 3;
a failed λ₀ check exits with status 1.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import argparse
import contextlib
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import eoskeras
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs.runner import prepare, recipe_optimizer, resolve_learning_rate
from eoskeras.training.thresholds import threshold_numerator
from eoskeras.training.verify import train_step_sharpness
from _common import machine, median_seconds, print_table

RECIPES = ("cifar10_resnet", "cifar10_vgg", "cifar10_clipped_adam")


def data_source(recipe) -> tuple[contextlib.AbstractContextManager, str]:
    """Real CIFAR-10 when on disk, else tfds mock images of the same shapes."""
    try:
        eoskeras.load_data(eoskeras.DataSpec(dataset="cifar10", train_size=1, test_size=1))
        return contextlib.nullcontext(), "cifar10 (tfds)"
    except eoskeras.DataUnavailableError:
        total = recipe.data.train_size + recipe.data.test_size
        return tfds.testing.mock_data(num_examples=total), "tfds mock images"


def check_lambda0(name: str, size_overrides: list[str]) -> tuple[float, float, float]:
    """(lr_relative asked, η·λ₀/c from the independent float64 check, its λ₀)."""
    recipe = load_recipe(bundled_recipes()[name], size_overrides + ["data.dtype=float64", "curvature.dtype=float64"])
    source, _ = data_source(recipe)
    with source:
        p = prepare(recipe)
    lr = resolve_learning_rate(p)["lr"]
    o = recipe.optimizer
    probe = recipe_optimizer(recipe, lr)
    check = train_step_sharpness(p.model, p.data.x_train, p.data.y_train, optimizer=probe, tol=1e-5)
    return o.lr_relative, lr * check.lambda_max / threshold_numerator(probe), check.lambda_max


def time_recipe(name: str, size_overrides: list[str], steps: int) -> list[object]:
    recipe = load_recipe(bundled_recipes()[name], size_overrides)
    source, label = data_source(recipe)
    with source:
        p = prepare(recipe)
    x, y = tf.constant(p.data.x_train), tf.constant(p.data.y_train)
    p.model.compile(optimizer=eoskeras.make_optimizer("gd", 0.01))
    p.model.fit_full_batch(x, y, steps=2)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    start = time.perf_counter()
    p.model.fit_full_batch(x, y, steps=steps, initial_step=2)
    step = (time.perf_counter() - start) / steps
    v = np.random.default_rng(0).standard_normal(p.oracle.dim)
    grad = median_seconds(p.oracle.loss_and_gradient, repeats=5)
    hvp = median_seconds(lambda: p.oracle.hvp(v), repeats=5)
    block = median_seconds(lambda: p.oracle.hvp_block(np.stack([v] * 10, axis=1)), repeats=3)
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30 if gpu else float("nan")
    return [name, f"{len(p.data.x_train)} ({label})", step, grad, hvp, block, hvp / grad, peak]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="training examples (default: the recipe's 5,120)")
    parser.add_argument("--cpu", action="store_true", help="run without a GPU (a smoke test at a small --size)")
    args = parser.parse_args()
    print(machine())
    if not tf.config.list_physical_devices("GPU") and not args.cpu:
        print("no GPU visible to TensorFlow: nothing to check")
        return 3
    sizes = [] if args.size is None else [
        f"data.train_size={args.size}", f"data.test_size={args.size}", f"training.physical_batch_size={args.size}",
        f"curvature.hessian_size={args.size}"]
    checks = [(name, *check_lambda0(name, sizes)) for name in RECIPES]
    print_table("lr_relative against the train step's own λ₀ (float64 finite differences, ARPACK)",
                ["recipe", "lr_relative", "η·λ₀/c measured", "λ₀ (train step)"], [list(c) for c in checks])
    print_table("cost at the recipe's size (float32)",
                ["recipe", "examples", "full-batch step s", "gradient s", "HVP s", "10 HVPs (block) s",
                 "HVP / gradient", "peak GPU GiB"], [time_recipe(name, sizes, args.steps) for name in RECIPES])
    failed = [name for name, asked, measured, _ in checks if abs(measured / asked - 1) > 0.02]
    if failed:
        print(f"FAILED: η·λ₀/c is more than 2 % from lr_relative for {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
