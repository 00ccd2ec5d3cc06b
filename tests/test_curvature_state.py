"""Curvature computations never change model, optimizer or random state."""
from __future__ import annotations

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

import eoskeras


def bn_dropout_model():
    return keras.Sequential([
        keras.Input((5, 5, 1)),
        keras.layers.Conv2D(3, 3),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])


def plain_model():
    """Nothing for the twin to change: measured as itself, not cloned."""
    return keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(3, 3, activation="tanh"),
                             keras.layers.Flatten(), keras.layers.Dense(3)])


def all_curvature_calls(model, x, y):
    for bn_mode in ("batch", "inference"):
        oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=7, bn_mode=bn_mode)
        oracle.loss_and_gradient()
        eoskeras.lanczos(oracle, k=2, max_hvps=10)
        eoskeras.EigenTracker(k=2, max_hvps=6).update(oracle)
        eoskeras.hutchpp_trace(oracle, 6)
        eoskeras.spectral_density(oracle, num_vectors=1, steps=4)


def draws():
    return (np.random.rand(), random.random(), float(tf.random.uniform(())), float(keras.random.uniform(())))


@pytest.mark.parametrize("build", [bn_dropout_model, plain_model])
def test_no_model_optimizer_or_rng_state_changes(build):
    keras.utils.set_random_seed(0)
    model = build()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 5, 5, 1)).astype("float32"), rng.integers(0, 3, 20)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=20, verbose=0)  # creates optimizer slots, moves BN statistics
    before = [v.numpy().copy() for v in model.variables + model.optimizer.variables]

    keras.utils.set_random_seed(123)
    all_curvature_calls(model, x, y)
    after_curvature = draws()
    keras.utils.set_random_seed(123)
    untouched = draws()

    after = [v.numpy() for v in model.variables + model.optimizer.variables]
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert after_curvature == untouched


@pytest.mark.parametrize("build,dtype,cloned", [
    (plain_model, "float32", False),
    (plain_model, "float64", True),   # each layer must compute in float64
    (bn_dropout_model, "float32", True),   # exact BatchNormalization, no Dropout
    (lambda: keras.Sequential([plain_model(), keras.layers.Dropout(0.5)]), "float32", True),   # nested or not
])
def test_the_twin_is_a_clone_only_where_a_layer_must_change(build, dtype, cloned):
    model = build()
    variables = len(model.variables)
    objective = eoskeras.CurvatureObjective(model, "mse", np.zeros((4, 5, 5, 1)), np.zeros(4, int), dtype=dtype)
    assert (objective.twin.model is not model) == cloned
    assert len(model.variables) == variables
    if not cloned:  # the model itself: its own variables, in their own order
        assert objective.twin.trainable_order == tuple(range(len(model.trainable_variables)))


def test_dropout_is_off_and_batch_mode_uses_batch_statistics():
    keras.utils.set_random_seed(0)
    model = bn_dropout_model()
    x, y = np.random.default_rng(0).standard_normal((20, 5, 5, 1)), np.arange(20) % 3
    batch = eoskeras.HessianOracle(model, "cross_entropy", x, y, bn_mode="batch")
    inference = eoskeras.HessianOracle(model, "cross_entropy", x, y, bn_mode="inference")
    # Deterministic despite Dropout(0.5): the twin has no dropout.
    assert batch.loss() == batch.loss()
    out_inf = model(x, training=False)
    expected_inf = float(tf.reduce_mean(eoskeras.losses.get_loss("cross_entropy")(tf.constant(y), out_inf)))
    assert inference.loss() == pytest.approx(expected_inf, rel=1e-5)
    assert batch.loss() != pytest.approx(expected_inf, rel=1e-3)
    assert batch.describe()["bn_mode"] == "batch"


@pytest.mark.parametrize("field,value", [("bn_mode", "train"), ("dtype", "float16"), ("hvp_mode", "jvp")])
def test_bad_modes_name_the_field_and_the_choices(field, value):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=rf"{field}: got '{value}'; allowed: "):
        eoskeras.HessianOracle(model, "mse", np.zeros((4, 3)), np.zeros(4, int), **{field: value})
