"""GPU check: the paper's ResNet20_base8 recipe on a GPU, measured.

Run: ``python benchmarks/gpu_check.py [--steps 20]`` on a machine with a GPU.

Trains ``recipes/cifar10_resnet.yaml`` for a fixed number of full-batch steps
(CIFAR-10 from tensorflow-datasets when it is on disk, otherwise synthetic
pixels of the same shape: timing does not depend on pixel values) and prints
the step time, the time of one HVP and one block of 10 HVPs on the recipe's
5,120-example Hessian subset, and the peak GPU memory. Without a GPU it says
so and exits with status 3.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import eoskeras
from eoskeras.recipes import bundled_recipes, load_recipe
from _common import machine, median_seconds, print_table


def cifar_like(recipe):
    """The recipe's data, or synthetic pixels of its shapes when absent."""
    try:
        from eoskeras.runs.runner import _data

        bundle = _data(recipe)
        return bundle.x_train, bundle.y_train, "cifar10 (tfds)"
    except eoskeras.DataUnavailableError:
        rng = np.random.default_rng(0)
        n = recipe.data.train_size
        return rng.standard_normal((n, 32, 32, 3)).astype("float32"), rng.integers(0, 10, n), "synthetic pixels"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(machine())
    if not tf.config.list_physical_devices("GPU"):
        print("no GPU visible to TensorFlow: nothing to check")
        return 3
    recipe = load_recipe(bundled_recipes()["cifar10_resnet"])
    x, y, source = cifar_like(recipe)
    net = eoskeras.build_model(recipe.model.name, x.shape[1:], 10, seed=0)
    model = eoskeras.FullBatchModel(net, loss=recipe.loss, physical_batch_size=recipe.training.physical_batch_size)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit_full_batch(x, y, steps=2)
    tf.config.experimental.reset_memory_stats("GPU:0")
    start = time.perf_counter()
    model.fit_full_batch(x, y, steps=args.steps, initial_step=2)
    step = (time.perf_counter() - start) / args.steps
    c = recipe.curvature
    oracle = eoskeras.HessianOracle(net, recipe.loss, x[: c.hessian_size], y[: c.hessian_size],
                                    micro_batch_size=c.micro_batch_size, bn_mode=c.bn_mode, dtype=c.dtype)
    v = np.random.default_rng(0).standard_normal(oracle.dim)
    hvp = median_seconds(lambda: oracle.hvp(v), repeats=5)
    block = median_seconds(lambda: oracle.hvp_block(np.stack([v] * 10, axis=1)), repeats=3)
    grad = median_seconds(oracle.loss_and_gradient, repeats=5)
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    print_table(f"{recipe.name}: {recipe.model.name}, {len(x)} examples ({source})",
                ["full-batch step s", "gradient s", "HVP s", "10 HVPs (block) s", "HVP / gradient", "peak GPU GiB"],
                [[step, grad, hvp, block, hvp / grad, peak]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
