"""Fill in the defaults that depend on other settings.

A parsed recipe then holds concrete values (the run directory records exactly
what ran, and consumers need no fallbacks). Resolving an already resolved
recipe changes nothing, so ``to_dict`` output parses back to an equal recipe.

Example: ``resolve(recipe).data.labels`` is ``"onehot"`` for an mse recipe
that left ``labels: auto``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from eoskeras.data.catalog import DATASETS
from eoskeras.recipes.schema import OPTIMIZER_HYPERPARAMETERS, Recipe, TrainingSpec

T = TypeVar("T")

# `labels: auto` follows the loss: MSE regresses one-hot targets.
AUTO_LABELS = {"mse": "onehot", "cross_entropy": "integer"}


def _or(value: T | None, fallback: T) -> T:
    return fallback if value is None else value


def train_chunk_size(training: TrainingSpec) -> int:
    """Examples per chunk of the train step (BatchNorm's ghost batches):
    ``physical_batch_size``, or ``batch_size`` when that is smaller."""
    return min(training.physical_batch_size, training.batch_size or training.physical_batch_size)


def resolve(recipe: Recipe) -> Recipe:
    """Return ``recipe`` with every derived ``null``/``auto`` default made concrete.

    Hyperparameters the optimiser does not read, and required ones the recipe
    left out, stay null; rules.py reports both.
    """
    info = DATASETS[recipe.data.dataset]
    data = replace(
        recipe.data,
        train_size=_or(recipe.data.train_size, info.train_size),
        test_size=_or(recipe.data.test_size, info.test_size),
        labels=AUTO_LABELS[recipe.loss] if recipe.data.labels == "auto" else recipe.data.labels,
    )
    optimizer = recipe.optimizer
    defaults = OPTIMIZER_HYPERPARAMETERS[optimizer.name]
    optimizer = replace(optimizer, **{
        name: default for name, default in defaults.items()
        if default is not None and getattr(optimizer, name) is None})
    training = replace(recipe.training,
                       eval_test_every=_or(recipe.training.eval_test_every,
                                           recipe.training.log_every))
    curvature = replace(
        recipe.curvature,
        hessian_size=_or(recipe.curvature.hessian_size, data.train_size),
        # The train step's chunks: with BatchNorm they define the loss itself.
        micro_batch_size=_or(recipe.curvature.micro_batch_size, train_chunk_size(recipe.training)),
    )
    output = replace(recipe.output, dir=_or(recipe.output.dir, f"runs/{recipe.name}"))
    return replace(recipe, data=data, optimizer=optimizer, training=training,
                   curvature=curvature, output=output)
