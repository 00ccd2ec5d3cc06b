"""Loss-landscape slices: curvature at the origin, filter normalisation, no side effects."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import eoskeras
from eoskeras.curvature.landscape import filter_normalized_direction, loss_and_accuracy
from tiny_models import build, data_for


def oracle_for(name: str, n: int = 24):
    model = build(name)
    x, y = data_for(model, n)
    return model, x, y, eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=8, dtype="float64")


@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_batchnorm"])
def test_second_difference_along_an_eigenvector_is_its_eigenvalue(name):
    _, _, _, oracle = oracle_for(name)
    directions, eigenvalues = eoskeras.eigen_directions(oracle, 2, tol=1e-10)
    h = 1e-3
    for d, lam in zip(directions, eigenvalues):
        s = eoskeras.landscape_slice(oracle, [d], span=h, points=3)
        second = (s.loss[0] - 2 * s.loss[1] + s.loss[2]) / h**2
        assert second == pytest.approx(lam, rel=1e-4)
        assert s.loss[1] == pytest.approx(oracle.loss(), rel=1e-12)


def test_slices_never_change_weights_or_batchnorm_statistics():
    model, _, _, oracle = oracle_for("cnn_batchnorm")
    for v in model.non_trainable_variables:  # non-trivial moving statistics
        v.assign(np.random.default_rng(1).uniform(0.5, 1.5, v.shape))
    before = [v.numpy().copy() for v in model.variables]
    d = eoskeras.random_directions(oracle, 2, seed=0)
    plane = eoskeras.landscape_slice(oracle, d, span=1.0, points=5)
    line = eoskeras.landscape_slice(oracle, d[:1], span=1.0, points=5)
    assert plane.loss.shape == plane.accuracy.shape == (5, 5) and line.loss.shape == (5,)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables))
    # The 2-D slice's middle row along β = 0 is the 1-D slice.
    np.testing.assert_allclose(plane.loss[:, 2], line.loss, rtol=1e-12)


def test_filter_normalisation_matches_each_filter_and_zeroes_rank_one_parameters():
    model, _, _, oracle = oracle_for("cnn_batchnorm")
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    d = filter_normalized_direction(oracle.weights(), shapes, np.random.default_rng(0))
    start = 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        part, w = d[start:start + size].reshape(v.shape), v.numpy()
        start += size
        if len(v.shape) <= 1:
            assert not part.any()  # biases and BatchNorm gamma/beta
        else:
            axes = tuple(range(len(v.shape) - 1))
            np.testing.assert_allclose(np.sqrt(np.sum(part**2, axis=axes)), np.sqrt(np.sum(w**2, axis=axes)),
                                       rtol=1e-9)


def test_loss_and_accuracy_match_the_keras_model():
    model, x, y, oracle = oracle_for("mlp_tanh")
    loss, accuracy = loss_and_accuracy(oracle)
    logits = model.predict(x, verbose=0)
    assert accuracy == pytest.approx(np.mean(np.argmax(logits, axis=1) == y))
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    assert loss == pytest.approx(float(expected), rel=1e-6)  # Keras losses compute in float32


def test_bad_arguments_are_named():
    _, _, _, oracle = oracle_for("mlp_tanh")
    d = eoskeras.random_directions(oracle, 3)
    with pytest.raises(ValueError, match="directions: got 3"):
        eoskeras.landscape_slice(oracle, d)
    with pytest.raises(ValueError, match="points: got 2"):
        eoskeras.landscape_slice(oracle, d[:1], points=2)
    with pytest.raises(ValueError, match="span: got 0"):
        eoskeras.landscape_slice(oracle, d[:1], span=0)
