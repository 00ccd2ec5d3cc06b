"""Per-layer spectra against blocks of the dense finite-difference Hessian."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import eoskeras
from eoskeras.curvature.restricted import matching_blocks, parameter_blocks
from tiny_models import build, data_for, finite_difference_hessian


def names(model) -> list[str]:
    return [layer.name for layer in model.layers if layer.trainable_weights]


@functools.lru_cache(maxsize=None)
def setup(name: str = "cnn_batchnorm"):
    model = build(name)
    x, y = data_for(model)
    oracle = eoskeras.HessianOracle(model, "cross_entropy", x, y, micro_batch_size=len(x), dtype="float64")
    reference = finite_difference_hessian(model, "cross_entropy", x, y)
    return model, oracle, (reference + reference.T) / 2


def test_blocks_cover_every_weight_once_in_oracle_order():
    model, oracle, _ = setup()
    blocks = parameter_blocks(model)
    assert list(blocks) == names(model) and len(blocks) == 3
    assert np.array_equal(np.concatenate(list(blocks.values())), np.arange(oracle.dim))
    assert len(blocks[names(model)[0]]) == 3 * 3 * 1 * 3 + 3


# Selections by regex or by layer names (the i-th trainable layer's name).
@pytest.mark.parametrize("layers", ["^conv2d", "batch_norm|dense", [2], [0, 1]])
def test_restricted_operator_is_the_dense_block(layers):
    model, oracle, reference = setup()
    if isinstance(layers, list):
        layers = [names(model)[i] for i in layers]
    indices = eoskeras.select_parameters(model, layers)
    sub = eoskeras.RestrictedOperator(oracle, indices)
    dense = np.stack([sub.matvec(e) for e in np.eye(sub.dim)], axis=1)
    block = reference[np.ix_(indices, indices)]
    assert np.linalg.norm(dense - block) < 1e-6 * np.linalg.norm(block)
    np.testing.assert_allclose(sub.matmat(np.eye(sub.dim)), dense, atol=1e-12 * np.abs(dense).max())


def test_layer_spectra_match_dense_block_eigenvalues_and_traces():
    model, oracle, reference = setup()
    spectra = eoskeras.layer_spectra(oracle, model, top_k=2, tol=1e-8, trace_hvps=10)
    assert [s.layer for s in spectra] == names(model)
    for s in spectra:
        idx = parameter_blocks(model)[s.layer]
        block = reference[np.ix_(idx, idx)]
        np.testing.assert_allclose(s.eigenvalues, np.linalg.eigvalsh(block)[::-1][:2], rtol=1e-5)
        # batch_normalization (6 weights) gets the exact trace, the others Hutch++.
        tolerance = 1e-6 * abs(np.trace(block)) + 3 * s.trace_stderr
        assert abs(s.trace - np.trace(block)) <= tolerance
    assert spectra[1].trace_stderr == 0.0 and spectra[0].trace_stderr > 0


def test_restriction_wraps_any_operator():
    model, oracle, _ = setup("mlp_tanh")
    ggn = eoskeras.GaussNewtonOperator(oracle)
    last = names(model)[-1]
    indices = eoskeras.select_parameters(model, [last])
    dense_full = np.stack([ggn.matvec(e) for e in np.eye(ggn.dim)], axis=1)
    sub = eoskeras.RestrictedOperator(ggn, indices, last)
    np.testing.assert_allclose(np.stack([sub.matvec(e) for e in np.eye(sub.dim)], axis=1),
                               dense_full[np.ix_(indices, indices)], rtol=1e-10, atol=1e-14)
    assert sub.describe()["operator"] == "ggn" and sub.describe()["restricted_to"] == last


def test_unknown_layers_are_named_with_the_allowed_ones():
    model, _, _ = setup()
    with pytest.raises(ValueError, match="matches no trainable layer; allowed: " + ", ".join(names(model))):
        matching_blocks(model, "lstm")
    dense = next(name for name in names(model) if name.startswith("dense"))  # dense_N after other tests
    with pytest.raises(ValueError, match="no trainable layer named 'nope'"):
        matching_blocks(model, [dense, "nope"])
    with pytest.raises(ValueError, match="not a regular expression"):
        matching_blocks(model, "(")
