"""HVP cost relative to a full-batch gradient, and cold vs warm eigensolves.

Run: ``python benchmarks/hvp_cost.py`` (about two minutes on 2 CPU cores).

Part 1 times, side by side, the full-data-set gradient and one HVP in both
modes (double backprop, forward-over-reverse) on 5,000 examples for an MLP
and a small CNN. Goal: HVP <= 2.0 gradients in the default mode.

Part 2 trains fc-tanh on the embedded MNIST digits and, after each block of
training steps, solves for lambda_max to 1e-3 relative accuracy both cold
(Lanczos from a random start) and warm (the tracker started from the last
eigenvectors), reporting HVPs and seconds of each.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads)
import time

import keras
import numpy as np

import eoskeras
from _common import machine, median_seconds, print_table


def networks():
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(200, activation="tanh"), keras.layers.Dense(200, activation="tanh"),
                            keras.layers.Dense(10)], name="mlp_784_200_200_10")
    quickstart = eoskeras.build_model("fc-tanh", (28, 28, 1), 10, seed=0, width=64)
    quickstart.name = "quickstart_fc_tanh_64"
    cnn = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                            keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
                            keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10)],
                           name="small_cnn")
    cnn_bn = eoskeras.build_model("cnn-relu-bn", (28, 28, 1), 10, seed=0, width=16)
    cnn_bn.name = "cnn_relu_bn_16"
    return [mlp, quickstart, cnn, cnn_bn]


def hvp_vs_gradient(x, y) -> None:
    rows = []
    for net in networks():
        oracles = {mode: eoskeras.HessianOracle(net, "cross_entropy", x, y, hvp_mode=mode)
                   for mode in eoskeras.HVP_MODES}
        v = np.random.default_rng(0).standard_normal(oracles["reverse"].dim)
        grad = median_seconds(oracles["reverse"].loss_and_gradient)
        for mode, oracle in oracles.items():
            hvp = median_seconds(lambda: oracle.hvp(v))
            rows.append([net.name, oracles[mode].dim, mode, grad, hvp, hvp / grad])
        block = np.stack([v] * 5, axis=1)
        per_hvp = median_seconds(lambda: oracles["reverse"].hvp_block(block)) / 5
        rows.append([net.name, oracles["reverse"].dim, "block of 5 (per HVP)", grad, per_hvp, per_hvp / grad])
    print_table(f"HVP vs full-batch gradient, {len(x)} examples, float32, micro-batch 1000",
                ["model", "params", "HVP mode", "gradient s", "HVP s", "HVP / gradient"], rows)
    return rows


def cold_vs_warm(x, y) -> None:
    net = eoskeras.build_model("fc-tanh", x.shape[1:], 10, seed=0)
    model = eoskeras.FullBatchModel(net, loss="mse")
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    oracle = eoskeras.HessianOracle(net, "mse", x, y)
    tol = 1e-3
    tracker = eoskeras.EigenTracker(k=1, tol=tol, seed=0)
    tracker.update(oracle)
    rows = []
    for block in range(6):
        model.fit_full_batch(x, y, steps=10)
        start = time.perf_counter()
        cold = eoskeras.lanczos(oracle, k=1, tol=tol, seed=block)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = tracker.update(oracle)
        warm_s = time.perf_counter() - start
        rows.append([10 * (block + 1), cold.lambda_max, warm.lambda_max, cold.num_hvps, warm.num_hvps, cold_s, warm_s,
                     warm.num_hvps / cold.num_hvps, cold.converged and warm.converged])
    print_table("lambda_max to 1e-3 relative residual during GD (fc-tanh, MSE, eta=0.05, 4,000 MNIST digits)",
                ["step", "cold lambda", "warm lambda", "cold HVPs", "warm HVPs", "cold s", "warm s", "warm/cold HVPs",
                 "both converged"],
                rows)


def main() -> None:
    print(machine())
    bundle = eoskeras.load_data(eoskeras.DataSpec("mnist5k"))
    x = np.concatenate([bundle.x_train, bundle.x_test])
    y = np.concatenate([bundle.y_train, bundle.y_test])
    hvp_vs_gradient(x, y)
    cold_vs_warm(bundle.x_train, bundle.y_train)


if __name__ == "__main__":
    main()
