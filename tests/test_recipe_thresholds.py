"""Every bundled recipe with ``lr_relative`` trains at that multiple of the
threshold of the loss its train step optimises.

Each recipe runs at a reduced size (10 examples in two BatchNorm ghost batches
of 5, the same model and data kind) for one step. Its first measurement's top
eigenvector is then checked without the curvature engine: finite differences
of ``FullBatchModel.accumulate``, the gradient ``train_step`` applies, give
vᵀHv and ‖Hv − λv‖ for the train step's own Hessian. A small residual makes λ
an eigenvalue of that Hessian, and η·λ/c must equal lr_relative. One recipe
is also checked with ARPACK on those differences alone (λ₀ found without the
engine's vector). The check runs in float64, since float32 rounding swamps
differences small enough to step over ReLU kinks; the loss itself (chunks,
BatchNorm statistics) is the recipe's.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from clitools import cli
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl
from eoskeras.runs.runner import prepare, recipe_optimizer, run_recipe
from eoskeras.training.verify import train_step_rayleigh, train_step_sharpness

# Threshold constants c (stable while sharpness < c/η), written out here rather
# than taken from eoskeras: GD 2; Adam (2 + 2β₁)/(1 − β₁).
THRESHOLD_CONSTANT = {"gd": lambda o: 2.0, "clipped_adam": lambda o: (2 + 2 * o["beta_1"]) / (1 - o["beta_1"])}

RELATIVE = sorted(name for name, path in bundled_recipes().items()
                  if load_recipe(path).optimizer.lr_relative is not None)


def test_the_paper_recipes_are_checked():
    assert {"cifar10_resnet", "cifar10_vgg", "cifar10_clipped_adam", "digits_vgg", "digits_resnet",
            "quickstart", "fashion_mnist_mlp"} <= set(RELATIVE)


def _reduced(name: str, tmp_path) -> list[str]:
    return ["data.train_size=10", "data.test_size=10", "data.dtype=float64", "training.physical_batch_size=5",
            "training.max_steps=1", "training.batch_size=null", "curvature.hessian_size=null",
            "curvature.micro_batch_size=null", "curvature.dtype=float64", "curvature.top_k=1", "curvature.every=2",
            "curvature.also_inference=false", "flatness.enabled=false", f"data.data_dir={tmp_path / 'data'}",
            f"output.dir=runs/{name}"]


@pytest.mark.parametrize("name", RELATIVE)
def test_lr_relative_is_the_multiple_of_the_trained_threshold(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(bundled_recipes()[name], _reduced(name, tmp_path))
    mock = (tfds.testing.mock_data(num_examples=20) if recipe.data.dataset != "mnist5k"
            else contextlib.nullcontext())
    with mock:
        result = run_recipe(recipe)
        p = prepare(recipe)  # the same seed: the initial weights of the run
    o = recipe.optimizer
    c = THRESHOLD_CONSTANT[o.name](recipe.to_dict()["optimizer"])
    probe = recipe_optimizer(recipe, result["lr"])
    run = tmp_path / f"runs/{name}"
    vector = np.load(run / layout.eigenvector_file(0))[:, 0]
    check = train_step_rayleigh(p.model, p.data.x_train, p.data.y_train, vector, optimizer=probe)
    assert check.residual < 0.01
    assert result["lr"] * check.lambda_max / c == pytest.approx(o.lr_relative, rel=0.02)
    # The monitor measures the same loss: its first λ_max at the full rate is lr_relative × threshold.
    first = read_jsonl(run / layout.CURVATURE)[0]
    assert first["step"] == 0 and first["converged"]
    assert result["lr"] * first["lambda_max"] / c == pytest.approx(o.lr_relative, rel=0.02)
    if name == "digits_vgg":  # λ₀ found by ARPACK on the train step's differences alone
        alone = train_step_sharpness(p.model, p.data.x_train, p.data.y_train, tol=1e-4)
        assert alone.lambda_max == pytest.approx(check.lambda_max, rel=1e-3)


def test_inference_mode_differs_and_is_recorded_apart(tmp_path, monkeypatch):
    """With BatchNorm, inference mode at initialisation measures an unnormalised
    network: the runner records it beside λ₀ and never resolves η from it."""
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(bundled_recipes()["digits_resnet"],
                         _reduced("r", tmp_path) + ["curvature.also_inference=true", "data.dtype=float32",
                                                    "curvature.dtype=float32"])
    result = run_recipe(recipe)
    assert result["initial_sharpness_mode"]["bn_mode"] == "batch"
    assert result["initial_sharpness_inference_mode"]["bn_mode"] == "inference"
    assert result["lr"] == pytest.approx(2.0 * 2 / result["initial_sharpness"])
    ratio = result["initial_sharpness_inference"] / result["initial_sharpness"]
    assert not 0.5 < ratio < 2, ratio
    records = read_jsonl(tmp_path / "runs/r" / layout.CURVATURE)
    assert records[0]["inference_converged"]
    assert records[0]["lambda_max_inference"] == pytest.approx(result["initial_sharpness_inference"], rel=1e-2)
    assert records[0]["lambda_max"] == pytest.approx(result["initial_sharpness"], rel=1e-2)


@pytest.mark.parametrize("override, field", [("curvature.micro_batch_size=50", "curvature.micro_batch_size"),
                                             ("curvature.hessian_size=150", "curvature.hessian_size")])
def test_a_hessian_over_other_batchnorm_chunks_is_refused(override, field, tmp_path, monkeypatch):
    """With BatchNorm the chunks are part of the loss: a Hessian over others would measure another loss."""
    monkeypatch.chdir(tmp_path)
    result = cli("train", "digits_vgg", "--set", "data.train_size=200", "--set", "training.physical_batch_size=100",
                 "--set", override, "--out", "run")
    assert result.exit_code == 2, result.output
    assert f"{field}:" in result.output and "the train step's chunks" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
