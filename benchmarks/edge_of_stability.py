"""Sharpness/threshold traces of full-batch GD on the embedded MNIST digits,
and the cost of monitoring.

Run: ``python benchmarks/edge_of_stability.py`` (about three minutes on 2 CPU cores).

fc-tanh (64-64), MSE, 1,000 class-balanced digits, eta = f * 2/lambda_0 for
f = 0.9 (sharpens into the threshold), 0.2 (far below) and 2.0 (above from the
start). Prints lambda_max / (2/eta) every 50 steps, the loss, the number of
loss increases, the top-5 subspace similarity to step 0, and seconds per
step with and without the SharpnessMonitor (top-1 and top-5, every 10 steps).
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import time

import keras
import numpy as np

import eoskeras
from _common import machine, print_table


def run(relative: float, steps: int, top_k: int | None):
    spec = eoskeras.DataSpec("mnist5k", train_size=1000, subset="balanced", flatten=True, labels="onehot")
    bundle = eoskeras.load_data(spec)
    x, y = bundle.x_train, bundle.y_train
    net = eoskeras.build_model("fc-tanh", bundle.input_shape, 10, seed=0, width=64)
    lambda0 = eoskeras.lanczos(eoskeras.HessianOracle(net, "mse", x, y), k=1, tol=1e-5).lambda_max
    model = eoskeras.FullBatchModel(net, loss="mse")
    model.compile(optimizer=keras.optimizers.SGD(relative * 2 / lambda0))
    callbacks = [eoskeras.SharpnessMonitor(x, y, every=10, top_k=top_k, tol=1e-3)] if top_k else []
    model.fit_full_batch(x, y, steps=5)  # trace the step outside the timing
    start = time.perf_counter()
    history = model.fit_full_batch(x, y, steps=steps, initial_step=5, callbacks=callbacks)
    seconds = (time.perf_counter() - start) / steps
    return (callbacks[0].public_records() if callbacks else []), np.array(history.history["loss"]), seconds


def main() -> None:
    print(machine())
    timing = []
    for relative, steps in ((0.9, 600), (0.2, 300), (2.0, 300)):
        records, losses, per_step = run(relative, steps, 5)
        rows = [[r["step"], r["lambda_max"], r["sharpness_ratio"], r["similarity_first"], losses[min(r["step"], steps - 1)]]
                for r in records if r["step"] % 50 == 0]
        ups = int(np.sum(np.diff(losses) > 0))
        print_table(f"eta = {relative} x 2/lambda_0: {ups} loss increases in {steps} steps, "
                    f"loss {losses[0]:.4f} -> {losses[-1]:.4f}",
                    ["step", "lambda_max", "lambda_max / (2/eta)", "top-5 similarity to step 0", "loss"], rows)
        timing.append([relative, "top-5 every 10", per_step])
    for relative in (0.9, 2.0):
        timing.append([relative, "top-1 every 10", run(relative, 300, 1)[2]])
        timing.append([relative, "none", run(relative, 300, None)[2]])
    print_table("seconds per step (1,000 examples, fc-tanh 64-64)", ["f", "monitor", "s/step"], timing)


if __name__ == "__main__":
    main()
