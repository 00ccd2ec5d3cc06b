"""tf.distribute and mixed precision: the same numbers as a single device."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import eoskeras


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device():
    script = Path(__file__).with_name("distributed_check.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    diffs = json.loads(done.stdout.strip().splitlines()[-1])
    assert diffs.pop("replicas") == [1, 2]
    # One device trains with ghost batches 100, 100, 56; the shards of 128 would give 100, 28, 100, 28: refused.
    single, mirrored = diffs.pop("unaligned")
    assert single == "trained"
    for named in ("physical_batch_size: 100", "256-example batch", "2 replicas (128 each)", "such as 64"):
        assert named in mirrored, (named, mirrored)
    for key, value in diffs.items():
        assert value <= 1e-5, (key, value)


def test_curvature_is_float32_when_the_model_trains_in_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        mixed = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.LayerNormalization(), keras.layers.Dense(3)])
    finally:
        keras.config.set_dtype_policy(previous)
    assert mixed.layers[0].compute_dtype == "float16"
    plain = keras.models.clone_model(mixed, clone_function=lambda layer: type(layer).from_config(
        {**layer.get_config(), "dtype": "float32"}))
    plain.set_weights(mixed.get_weights())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 5)).astype("float32"), rng.integers(0, 3, 40)
    v = rng.standard_normal(sum(w.size for w in mixed.get_weights()))
    from_mixed = eoskeras.HessianOracle(mixed, "cross_entropy", x, y, dtype="float32")
    reference = eoskeras.HessianOracle(plain, "cross_entropy", x, y, dtype="float32")
    # Identical float32 computation, not a float16 one (which would differ by ~1e-3).
    np.testing.assert_allclose(from_mixed.hvp(v), reference.hvp(v), rtol=1e-6, atol=1e-7)
    assert from_mixed.describe()["dtype"] == "float32"
    with pytest.raises(ValueError, match="dtype: got 'float16'"):
        eoskeras.HessianOracle(mixed, "cross_entropy", x, y, dtype="float16")
