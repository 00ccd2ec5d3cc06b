"""Rules that relate several settings, checked on a resolved recipe.

Each rule is a generator of ``RecipeError``s registered with ``@rule``;
``check_rules`` runs them all so every violation is reported at once.

Example: ``check_rules(resolve(recipe))`` -> ``[]`` for a consistent recipe.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from eoskeras.data.catalog import DATASETS
from eoskeras.models.catalog import MODEL_OPTIONS
from eoskeras.recipes.errors import MISSING, RecipeError
from eoskeras.recipes.schema import (
    OPTIMIZER_HYPERPARAMETERS, OptimizerSpec, Recipe, fields_of, readers_of,
)

# The optimiser settings that only some optimisers read, in schema order.
_HYPERPARAMETERS = [name for name in fields_of(OptimizerSpec) if readers_of(name)]

Rule = Callable[[Recipe], Iterator[RecipeError]]
_RULES: list[Rule] = []


def rule(check: Rule) -> Rule:
    _RULES.append(check)
    return check


def check_rules(recipe: Recipe) -> list[RecipeError]:
    """Every cross-field problem of a resolved recipe (empty when consistent)."""
    return [error for check in _RULES for error in check(recipe)]


@rule
def _one_learning_rate(recipe: Recipe) -> Iterator[RecipeError]:
    lr, relative = recipe.optimizer.lr, recipe.optimizer.lr_relative
    allowed = ("exactly one of optimizer.lr (an absolute rate > 0) or optimizer.lr_relative "
               "(a multiple > 0 of the stability threshold)")
    if lr is None and relative is None:
        yield RecipeError("optimizer.lr", MISSING, allowed, "missing: no learning rate given")
    elif lr is not None and relative is not None:
        yield RecipeError("optimizer.lr", lr, allowed,
                          f"given together with optimizer.lr_relative = {relative:g}")


@rule
def _optimizer_hyperparameters(recipe: Recipe) -> Iterator[RecipeError]:
    optimizer = recipe.optimizer
    reads = OPTIMIZER_HYPERPARAMETERS[optimizer.name]
    for name in _HYPERPARAMETERS:
        value, path = getattr(optimizer, name), f"optimizer.{name}"
        if name in reads and value is None:  # resolve() filled every optional one
            kind = fields_of(OptimizerSpec)[name].metadata["kind"].inner
            yield RecipeError(path, MISSING, kind.allowed,
                              f"missing (required by {optimizer.name})")
        elif name not in reads and value is not None:
            readers = ", ".join(readers_of(name))
            yield RecipeError(path, value, f"null with {optimizer.name}; it is read by {readers}",
                              f"not used by {optimizer.name}")


@rule
def _sizes_within_dataset(recipe: Recipe) -> Iterator[RecipeError]:
    data = recipe.data
    info = DATASETS[data.dataset]
    for split, size, available in (("train", data.train_size, info.train_size),
                                   ("test", data.test_size, info.test_size)):
        path = f"data.{split}_size"
        if size > available:
            yield RecipeError(path, size, f"at most {available:,} ({data.dataset}'s {split} split)",
                              f"more than {data.dataset} has")
        elif data.subset == "balanced" and size < available and size % info.num_classes:
            yield RecipeError(path, size,
                              f"a multiple of {info.num_classes} (the classes of {data.dataset}) "
                              "with subset: balanced",
                              "classes cannot be equally represented")


@rule
def _labels_match_loss(recipe: Recipe) -> Iterator[RecipeError]:
    if recipe.loss == "mse" and recipe.data.labels == "integer":
        yield RecipeError("data.labels", "integer", "onehot or auto with loss: mse",
                          "mse regresses one-hot targets")


@rule
def _subsets_of_training_data(recipe: Recipe) -> Iterator[RecipeError]:
    train_size = recipe.data.train_size
    for path, size in (("training.batch_size", recipe.training.batch_size),
                       ("curvature.hessian_size", recipe.curvature.hessian_size)):
        if size is not None and size > train_size:
            yield RecipeError(path, size, f"at most data.train_size ({train_size:,})",
                              "more than the training examples")


@rule
def _options_of_model(recipe: Recipe) -> Iterator[RecipeError]:
    model = recipe.model
    accepted = MODEL_OPTIONS[model.name]
    for key, value in model.options.items():
        if key not in accepted:
            yield RecipeError(f"model.options.{key}", value,
                              f"options of {model.name}: " + ", ".join(accepted),
                              f"not an option of {model.name}")


@rule
def _enough_eigensolver_hvps(recipe: Recipe) -> Iterator[RecipeError]:
    curvature = recipe.curvature
    if curvature.max_hvps is not None and curvature.max_hvps < curvature.top_k:
        yield RecipeError("curvature.max_hvps", curvature.max_hvps,
                          f"at least curvature.top_k ({curvature.top_k})",
                          "too few to find top_k eigenpairs")


@rule
def _no_float64_on_tpu(recipe: Recipe) -> Iterator[RecipeError]:
    if recipe.strategy != "tpu":
        return
    for path, dtype in (("data.dtype", recipe.data.dtype),
                        ("curvature.dtype", recipe.curvature.dtype)):
        if dtype == "float64":
            yield RecipeError(path, dtype, "float32 with strategy: tpu", "TPUs lack float64")
