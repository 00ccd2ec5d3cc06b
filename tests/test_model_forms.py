"""Every form of one network gives the same, exact spectrum: Sequential,
Functional and subclassed, in memory and loaded from ``.keras``, with and
without normalisation layers, against a float64 finite-difference Hessian."""
from __future__ import annotations

import contextlib
import json

import keras
import numpy as np
import pytest

import eoskeras
from clitools import cli
from model_forms import KINDS, NORMS, build_form, loaded, same_weights
from tiny_models import finite_difference_hessian


@contextlib.contextmanager
def dtype_policy(name: str):
    # floatx too: keras.Input takes its dtype from it, not from the policy
    previous, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy(name)
    keras.config.set_floatx(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
        keras.config.set_floatx(floatx)


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5, 5, 1)), rng.integers(0, 3, n)


@pytest.mark.parametrize("norm", NORMS, ids=[str(n) for n in NORMS])
def test_every_form_gives_the_same_exact_spectrum(norm, tmp_path):
    x, y = data()
    with dtype_policy("float64"):
        forms = {}
        for kind in KINDS:
            model = same_weights(build_form(kind, norm))
            forms[f"{kind}/memory"] = model
            forms[f"{kind}/loaded"] = loaded(model, tmp_path, f"{kind}-{norm}")
    # Independent reference: central differences of the stock model's first derivatives.
    reference = finite_difference_hessian(forms["sequential/memory"], "cross_entropy", x, y)
    evals = np.linalg.eigvalsh((reference + reference.T) / 2)
    spectra = {}
    for name, model in forms.items():
        oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, dtype="float64")
        spectra[name] = eoskeras.lanczos(oracle, k=3, tol=1e-10, smallest=True, seed=0)
        assert spectra[name].converged, name
        np.testing.assert_allclose(spectra[name].eigenvalues, evals[::-1][:3], rtol=1e-6, err_msg=name)
        assert spectra[name].smallest == pytest.approx(evals[0], rel=1e-6, abs=1e-8 * evals[-1]), name
    first = spectra["sequential/memory"]
    for name, spectrum in spectra.items():
        np.testing.assert_allclose(spectrum.eigenvalues, first.eigenvalues, rtol=1e-10, err_msg=name)


def test_subclassed_normalisation_is_made_exact_only_during_the_trace():
    x, y = data()
    with dtype_policy("float64"):
        model = same_weights(build_form("subclassed", "batch"))
    oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, dtype="float64")
    oracle.hvp(np.ones(oracle.dim))
    assert "_moments" not in vars(model.normalise)  # the patch is gone after the trace
    exact = oracle.hvp(np.ones(oracle.dim))
    stock = finite_difference_hessian(model, "cross_entropy", x, y) @ np.ones(oracle.dim)
    assert np.linalg.norm(exact - stock) < 1e-6 * np.linalg.norm(stock)


def test_what_cannot_be_made_exact_is_refused_with_the_reason():
    class CustomNorm(keras.layers.BatchNormalization):
        pass

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), CustomNorm(), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="a subclass of keras.layers.BatchNormalization.*cannot swap a subclass"):
        eoskeras.HessianOracle(model, "mse", np.zeros((4, 4)), np.zeros(4, int))
    subclassed = build_form("subclassed", None)  # float32
    with pytest.raises(ValueError, match="dtype: got 'float64'.*computes in float32"):
        eoskeras.HessianOracle(subclassed, "cross_entropy", *data(), dtype="float64")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("norm", [None, "batch"], ids=["plain", "batchnorm"])
def test_spectrum_command_measures_a_saved_model_of_every_kind(kind, norm, tmp_path):
    model = same_weights(build_form(kind, norm, input_shape=(28, 28, 1), filters=2, classes=10), seed=1)
    path = tmp_path / f"user-{kind}-{norm}.keras"
    model.save(path)
    result = cli("spectrum", str(path), "--top-k", "3", "--examples", "200", "--trace-hvps", "6", "--json")
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert len(measured["eigenvalues"]) == 3 and measured["eigenvalues"][0] > 0
    assert isinstance(measured["converged"], bool)
