"""eoskeras's full-batch step against a plain Keras step, and memory vs N.

Run: ``python benchmarks/step_overhead.py`` (about a minute on 2 CPU cores).

Part 1 times, side by side on the same network and data, one step of
``FullBatchModel.fit_full_batch`` (micro-batches of 5,000 = one chunk, and of
1,000) and one ``train_on_batch`` of a plain compiled Keras model on the
whole batch. Goal: eoskeras / Keras <= 1.05.

Part 2 runs full-batch steps at a fixed micro-batch (1,000) for 5,000 and
20,000 examples, each in a fresh process, and reports the peak resident
memory of the process: it should not grow with N beyond the data itself.
"""
from __future__ import annotations

import _common  # noqa: F401  (quiet TensorFlow)
import json
import resource
import subprocess
import sys

import keras
import numpy as np

import eoskeras
from _common import machine, median_seconds, print_table


def network(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(200, activation="tanh"),
                             keras.layers.Dense(200, activation="tanh"), keras.layers.Dense(10)])


def data(n: int):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 784)).astype("float32"), rng.integers(0, 10, n)


def step_times() -> None:
    x, y = data(5000)
    rows = []
    plain = network()
    plain.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    keras_step = median_seconds(lambda: plain.train_on_batch(x, y), repeats=20, warmup=3)
    rows.append(["keras train_on_batch", "-", keras_step, 1.0])
    for micro in (5000, 1000):
        model = eoskeras.FullBatchModel(network(), physical_batch_size=micro)
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        model.fit_full_batch(x, y, steps=3)
        steps = 20
        seconds = median_seconds(lambda: model.fit_full_batch(x, y, steps=steps), repeats=3, warmup=1) / steps
        rows.append(["eoskeras fit_full_batch", micro, seconds, seconds / keras_step])
    print_table("one full-batch step, 5,000 examples, MLP 784-200-200-10",
                ["step", "micro-batch", "s/step", "ratio to Keras"], rows)


def peak_memory_child(n: int) -> None:
    x, y = data(n)
    model = eoskeras.FullBatchModel(network(), physical_batch_size=1000)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit_full_batch(x, y, steps=5)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "peak_mb": peak_mb, "data_mb": x.nbytes / 2**20}))


def peak_memory() -> None:
    rows = []
    for n in (5000, 20000):
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True)
        record = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([n, record["data_mb"], record["peak_mb"], record["peak_mb"] - record["data_mb"]])
    print_table("peak resident memory, micro-batch 1,000 (fresh process each)",
                ["examples", "data MiB", "peak MiB", "peak - data MiB"], rows)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        peak_memory_child(int(sys.argv[2]))
    else:
        print(machine())
        step_times()
        peak_memory()
