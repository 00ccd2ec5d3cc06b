"""Time one full-batch gradient of every zoo model on synthetic data.

The full batch (default 5,120 examples, the paper's CIFAR-10 subset size) is
split into micro-batches (default 1,024) whose gradients are summed inside one
``tf.function``, as full-batch gradient descent does it. Inputs are random
pixels in each model's natural shape (32x32x3; 28x28x1 for mlp3_nh32), 10
classes, float32, cross-entropy on logits, BatchNorm in training mode. The
first call (tracing) is discarded; the median of the next ``--repeats`` is
reported.

Usage:

    PYTHONPATH=. python benchmarks/model_zoo_gradients.py [--models vgg11,fc-tanh]
        [--examples 5120] [--micro-batch 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from eoskeras.models import build_model  # noqa: E402
from eoskeras.models.catalog import MODELS  # noqa: E402

CLASSES = 10


def natural_shape(name: str) -> tuple[int, ...]:
    return (28, 28, 1) if name == "mlp3_nh32" else (32, 32, 3)


def gradient_fn(model: keras.Model, micro_batch: int):
    """A tf.function returning the gradient of the mean loss over the whole batch."""
    variables = model.trainable_variables

    @tf.function
    def gradient(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        total = [tf.zeros_like(v) for v in variables]
        n = x.shape[0]
        for start in range(0, n, micro_batch):  # unrolled at trace time
            with tf.GradientTape() as tape:
                logits = model(x[start:start + micro_batch], training=True)
                losses = keras.losses.sparse_categorical_crossentropy(
                    y[start:start + micro_batch], logits, from_logits=True)
                loss = tf.reduce_sum(losses) / n
            total = [t + g for t, g in zip(total, tape.gradient(loss, variables))]
        return total

    return gradient


def time_model(name: str, examples: int, micro_batch: int, repeats: int) -> dict:
    shape = natural_shape(name)
    model = build_model(name, shape, CLASSES, seed=0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(examples, *shape)).astype("float32"))
    y = tf.constant(rng.integers(0, CLASSES, size=examples).astype("int32"))
    gradient = gradient_fn(model, micro_batch)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        grads = gradient(x, y)
        grads[-1].numpy()  # wait for the result
        times.append(time.perf_counter() - start)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {"name": name, "shape": shape, "params": params, "first": times[0],
            "median": statistics.median(times[1:]), "runs": times[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--examples", type=int, default=5120)
    parser.add_argument("--micro-batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"# {args.examples} examples, micro-batches of {args.micro_batch}, float32, "
          f"median of {args.repeats} after one warm-up call")
    print("| model | input | trainable params | gradient (s) | runs (s) |")
    print("| --- | --- | ---: | ---: | --- |")
    for name in args.models.split(","):
        r = time_model(name, args.examples, args.micro_batch, args.repeats)
        runs = ", ".join(f"{t:.2f}" for t in r["runs"])
        print(f"| {name} | {'x'.join(map(str, r['shape']))} | {r['params']:,} | "
              f"{r['median']:.3f} | {runs} |", flush=True)


if __name__ == "__main__":
    main()
