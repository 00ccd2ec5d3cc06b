"""Single-device vs MirroredStrategy over two logical CPUs, in a fresh process.

Logical devices must be configured before TensorFlow initialises its devices,
so the distributed test runs this script in a subprocess; it prints one JSON
object of relative differences.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import eoskeras  # noqa: E402


def network():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                             keras.layers.Activation("tanh"), keras.layers.Flatten(), keras.layers.Dense(3)])


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def curvature(strategy):
    net = network()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 300)
    oracle = eoskeras.HessianOracle(net, "cross_entropy", x, y, micro_batch_size=64, strategy=strategy)
    v = rng.standard_normal(oracle.dim)
    loss, grad = oracle.loss_and_gradient()
    spectrum = eoskeras.lanczos(oracle, k=2, tol=1e-6, seed=0)
    trace = eoskeras.hutchinson_trace(oracle, 10, seed=0)
    return {"loss": loss, "grad": grad, "hvp": oracle.hvp(v), "lambda_max": spectrum.lambda_max,
            "trace": trace.value, "replicas": oracle.describe()["replicas"]}


def training(strategy):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((256, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 256)
    with strategy.scope():
        model = eoskeras.FullBatchModel(network(), physical_batch_size=64)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit_full_batch(x, y, steps=5)
    # Trainable weights only: BatchNorm's moving statistics are updated per
    # replica from different ghost batches and legitimately differ.
    return {"loss": history.history["loss"],
            "weights": np.concatenate([v.numpy().ravel() for v in model.trainable_variables])}


def unaligned(strategy) -> str:
    """Shards of 128 (256 over two replicas) are not whole micro-batches of 100: refused."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((256, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 256)
    with strategy.scope():
        model = eoskeras.FullBatchModel(network(), physical_batch_size=100)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    try:
        model.fit_full_batch(x, y, steps=1)
    except ValueError as err:
        return str(err)
    return "trained"


def main() -> None:
    single, mirrored = tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    a, b = curvature(single), curvature(mirrored)
    out = {key: rel(b[key], a[key]) for key in ("loss", "grad", "hvp", "lambda_max", "trace")}
    out["replicas"] = [a["replicas"], b["replicas"]]
    # Training shards the full batch (128 per replica, micro-batches of 64 in both cases).
    ta, tb = training(single), training(mirrored)
    out["train_loss"] = rel(tb["loss"], ta["loss"])
    out["train_weights"] = rel(tb["weights"], ta["weights"])
    out["unaligned"] = [unaligned(single), unaligned(mirrored)]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
