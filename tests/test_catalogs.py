"""Each list of allowed values has one home, and every consumer reads it.

The homes (data/catalog.py, data/spec.py, models/catalog.py,
training/catalog.py, curvature/choices.py, runs/choices.py) import no
TensorFlow; recipes, the command line and the builders offer their lists.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import click
import pytest

from eoskeras.cli.main import main
from eoskeras.curvature import choices as curvature
from eoskeras.data import spec as data
from eoskeras.data.catalog import DATASETS
from eoskeras.models.catalog import MODELS
from eoskeras.recipes import parse_recipe, schema
from eoskeras.recipes.fields import Choice
from eoskeras.recipes.resolve import AUTO_LABELS
from eoskeras.runs.choices import STRATEGIES
from eoskeras.training.catalog import CLIP_MODES, LOSSES, OPTIMIZERS

HOMES = ("eoskeras.data.catalog", "eoskeras.data.spec", "eoskeras.models.catalog", "eoskeras.training.catalog",
         "eoskeras.curvature.choices", "eoskeras.runs.choices")

# Every choice a recipe offers, and the list it must be.
RECIPE_CHOICES = {
    "runtime": schema.RUNTIMES,
    "data.dataset": tuple(DATASETS),
    "data.subset": data.SUBSETS,
    "data.preprocessing": data.PREPROCESSING,
    "data.labels": ("auto", *data.LABELS),
    "data.dtype": data.DTYPES,
    "model.name": tuple(MODELS),
    "loss": LOSSES,
    "optimizer.name": tuple(OPTIMIZERS),
    "optimizer.clip_mode": CLIP_MODES,
    "curvature.dtype": curvature.DTYPES,
    "curvature.hvp_mode": curvature.HVP_MODES,
    "curvature.criterion": curvature.CRITERIA,
    "curvature.vectors_dtype": ("float16", "float32"),
    "strategy": STRATEGIES,
}

# Every click.Choice of the command line, and the list it must be.
CLI_CHOICES = {
    ("train", "strategy"): STRATEGIES,
    ("spectrum", "dataset"): tuple(DATASETS),
    ("spectrum", "loss"): LOSSES,
    ("spectrum", "operator"): curvature.OPERATORS,
    ("landscape", "dataset"): tuple(DATASETS),
    ("landscape", "loss"): LOSSES,
    ("landscape", "directions"): ("eig", "random"),
}


def _recipe_choices(section: type, prefix: str = "") -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for field in dataclasses.fields(section):
        path = prefix + field.name
        if "section" in field.metadata:
            found |= _recipe_choices(field.metadata["section"], path + ".")
            continue
        kind = field.metadata["kind"]
        kind = getattr(kind, "inner", kind)  # Nullable
        if isinstance(kind, Choice):
            found[path] = kind.options
    return found


def test_homes_import_neither_tensorflow_nor_keras() -> None:
    code = (f"import sys\nfor m in {HOMES!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_recipe_choices_are_the_homes_lists() -> None:
    assert _recipe_choices(schema.Recipe) == RECIPE_CHOICES
    assert set(AUTO_LABELS) == set(LOSSES) and set(AUTO_LABELS.values()) <= set(data.LABELS)


def test_cli_choices_are_the_homes_lists() -> None:
    found = {(name, param.name): tuple(param.type.choices)
             for name, command in main.commands.items() for param in command.params
             if isinstance(param.type, click.Choice)}
    assert found == CLI_CHOICES


def test_library_checks_against_the_homes_lists() -> None:
    from eoskeras import losses
    from eoskeras.curvature import gauss_newton, lanczos, objective, oracle, tracker
    from eoskeras.runs import strategy

    assert objective.BN_MODES is curvature.BN_MODES and objective.DTYPES is curvature.DTYPES
    assert oracle.HVP_MODES is curvature.HVP_MODES
    assert lanczos.CRITERIA is curvature.CRITERIA and tracker.CRITERIA is curvature.CRITERIA
    assert gauss_newton.KINDS is curvature.GAUSS_NEWTON_KINDS
    assert strategy.STRATEGIES is STRATEGIES
    assert losses.LOSS_NAMES is LOSSES and set(losses._NAMED) == set(LOSSES)


def test_recipe_hyperparameters_are_the_catalogues() -> None:
    assert list(schema.OPTIMIZER_HYPERPARAMETERS) == list(OPTIMIZERS)
    optimizer_fields = {field.name for field in dataclasses.fields(schema.OptimizerSpec)}
    for name, info in OPTIMIZERS.items():
        recipe_names = [schema.RECIPE_NAMES.get(key, key) for key in info.defaults]
        assert set(recipe_names) <= optimizer_fields, name
        assert list(schema.OPTIMIZER_HYPERPARAMETERS[name].values()) == list(info.defaults.values())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_with_the_catalogues_facts(name: str) -> None:
    from eoskeras.training.optimizers import catalog_name, make_optimizer
    from eoskeras.training.thresholds import is_adaptive, threshold_learning_rate, threshold_numerator

    info = OPTIMIZERS[name]
    optimizer = make_optimizer(name, 0.5)
    assert catalog_name(optimizer) == name
    assert is_adaptive(optimizer) is info.adaptive
    for key, default in info.defaults.items():
        if default is not None:  # one epsilon (1e-8) for recipes and make_optimizer alike
            assert getattr(optimizer, key) == default, key
    assert threshold_numerator(optimizer) == pytest.approx(info.threshold(info.defaults))
    assert threshold_learning_rate(name, 2.0) == pytest.approx(info.threshold(info.defaults) / 2.0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_recipes_optimizer_has_the_recipes_hyperparameters(name: str) -> None:
    from eoskeras.training.optimizers import make_optimizer

    stated = {"clip_value": 2.0, "clip_mode": "lb"} if "clip_value" in OPTIMIZERS[name].defaults else {}
    recipe = parse_recipe({"name": "x", "data": {"dataset": "mnist5k"}, "model": {"name": "fc-tanh"},
                           "optimizer": {"name": name, "lr": 0.1, **stated}})
    arguments = schema.optimizer_arguments(recipe.optimizer)
    assert set(arguments) == set(OPTIMIZERS[name].defaults)
    optimizer = make_optimizer(name, 0.1, **arguments)
    for key, value in arguments.items():
        assert getattr(optimizer, key) == value, key
        assert getattr(recipe.optimizer, schema.RECIPE_NAMES.get(key, key)) == value


def test_make_optimizer_refuses_unknown_hyperparameters() -> None:
    from eoskeras.training.optimizers import make_optimizer

    with pytest.raises(TypeError, match="nesterov_momentum"):
        make_optimizer("gd", 0.1, nesterov_momentum=0.9)
    with pytest.raises(ValueError, match="allowed: gd, momentum"):
        make_optimizer("lamb", 0.1)
