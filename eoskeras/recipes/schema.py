"""The recipe schema: typed, frozen sections whose fields carry their own rules.

Each field's metadata holds its kind (what values it accepts, see fields.py)
and a one-line doc; parse.py reads these tables, so adding a setting means
adding one line here. Defaults are chosen so a recipe states only what
differs. ``null`` defaults that depend on other settings are filled in by
resolve.py, so a parsed ``Recipe`` holds concrete values.

Example:

```python
recipe = parse_recipe({"name": "demo", "data": {"dataset": "mnist5k"},
                       "model": {"name": "fc-tanh"}, "optimizer": {"lr": 0.1}})
recipe.optimizer.warmup_steps          # 2
recipe.to_dict()["data"]["labels"]     # "integer" (cross_entropy is the default loss)
```
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from eoskeras.curvature.choices import CRITERIA, DTYPES as HVP_DTYPES, HVP_MODES
from eoskeras.data.catalog import DATASETS
from eoskeras.data.spec import DTYPES, LABELS as DATA_LABELS, PREPROCESSING, SUBSETS
from eoskeras.models.catalog import MODELS
from eoskeras.recipes.fields import (
    Choice, Flag, Integer, Kind, Nullable, Number, RelativeDir, Text,
)
from eoskeras.recipes.options import FrozenOptions, Options
from eoskeras.runs.choices import STRATEGIES
from eoskeras.training.catalog import CLIP_MODES, LOSSES, OPTIMIZERS

RUNTIMES = ("cpu-minutes", "cpu-hours", "gpu")
LABELS = ("auto", *DATA_LABELS)  # auto: resolve.py picks by the loss

# Recipes name RMSProp's decay beta_2 (optax, the paper's code); Keras calls it rho.
RECIPE_NAMES = {"rho": "beta_2"}

# The optimiser hyperparameters each optimiser reads, in recipe names, with the
# value used when the recipe leaves them null; None marks one the recipe must
# state. A hyperparameter an optimiser does not read must stay null (rules.py),
# so that `name: gd, momentum: 0.9` fails instead of silently running plain GD.
OPTIMIZER_HYPERPARAMETERS: dict[str, dict[str, float | str | None]] = {
    name: {RECIPE_NAMES.get(key, key): default for key, default in info.defaults.items()}
    for name, info in OPTIMIZERS.items()
}

_NAME = Text(re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
             "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
_POSITIVE = Number(low=0, low_open=True)
_UNIT_OPEN_TOP = Number(low=0, high=1, high_open=True)


# Keys that recipes once had, with what replaces them: named in the error
# instead of a bare "unknown key".
REMOVED_KEYS: dict[str, str] = {
    "curvature.max_iterations": "renamed curvature.max_hvps (it always was a budget of HVPs per measurement; "
                                "null sizes it from top_k)",
    "curvature.bn_mode": "the sharpness compared with the threshold is always that of the loss the train step "
                         "optimises (BatchNorm batch statistics of its chunks); set curvature.also_inference: "
                         "true to also record the inference-mode (moving statistics) sharpness",
}


def setting(kind: Kind, doc: str, default: Any = dataclasses.MISSING) -> Any:
    """A field holding one value; without ``default`` the recipe must state it."""
    return dataclasses.field(default=default, metadata={"kind": kind, "doc": doc})


def section(cls: type, doc: str, *, required: bool = False) -> Any:
    """A field holding a nested section (itself a dataclass of settings)."""
    factory = dataclasses.MISSING if required else cls
    return dataclasses.field(default_factory=factory, metadata={"section": cls, "doc": doc})


def readers_of(name: str) -> list[str]:
    """The optimisers that read hyperparameter ``name``, e.g. momentum, nesterov."""
    return [optimizer for optimizer, table in OPTIMIZER_HYPERPARAMETERS.items() if name in table]


def hyperparameter(name: str, kind: Kind, what: str) -> Any:
    """An optimiser setting; its doc says which optimisers read it and the defaults."""
    readers = readers_of(name)
    defaults: dict[float | None, list[str]] = {}
    for optimizer in readers:
        defaults.setdefault(OPTIMIZER_HYPERPARAMETERS[optimizer][name], []).append(optimizer)
    filled = "; ".join(
        ("required" if default is None else f"null = {default:g}")
        + (f" for {', '.join(group)}" if len(defaults) > 1 else "")
        for default, group in defaults.items())
    doc = f"{what}; read by {', '.join(readers)} ({filled})"
    return setting(Nullable(kind), doc, None)


def optimizer_arguments(optimizer: OptimizerSpec) -> dict[str, float | str]:
    """The hyperparameters of a resolved optimizer section that its optimiser
    reads, as ``make_optimizer`` and ``threshold_learning_rate`` take them."""
    values = {key: getattr(optimizer, RECIPE_NAMES.get(key, key)) for key in OPTIMIZERS[optimizer.name].defaults}
    return {key: value for key, value in values.items() if value is not None}


def is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a section class by name, in declaration order."""
    return {field.name: field for field in dataclasses.fields(cls)}


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """What to train and test on (``data``)."""

    dataset: str = setting(Choice(tuple(DATASETS)), "data set name (eoskeras.data.catalog)")
    train_size: int | None = setting(Nullable(Integer()), "training examples used; null = all",
                                     None)
    test_size: int | None = setting(Nullable(Integer()), "test examples used; null = all", None)
    subset: str = setting(Choice(SUBSETS), "how train and test subsets are picked: the first "
                                           "N, or N/classes per class", "first")
    preprocessing: str = setting(Choice(PREPROCESSING),
                                 "standardize with the catalog's per-channel mean/std, "
                                 "with the training subset's own, or scale pixels to [0, 1]",
                                 "standardize")
    flatten: bool = setting(Flag(), "flatten images to vectors", False)
    labels: str = setting(Choice(LABELS),
                          "auto = onehot for mse, integer for cross_entropy", "auto")
    dtype: str = setting(Choice(DTYPES), "floating-point type of inputs and model", "float32")
    data_dir: str | None = setting(Nullable(Text(re.compile(r"[^\0]+"), "a non-empty path")),
                                   "where data sets are stored; null = the library default",
                                   None)
    download: bool = setting(Flag(), "may fetch missing data from the internet", False)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Which catalog model to build, with which options (``model``)."""

    name: str = setting(Choice(tuple(MODELS)), "model name (eoskeras.models.catalog)")
    options: FrozenOptions = dataclasses.field(
        default_factory=FrozenOptions,
        metadata={"kind": Options(), "doc": "builder options; which ones depends on the model"})


@dataclass(frozen=True, kw_only=True)
class OptimizerSpec:
    """How each step moves the weights (``optimizer``)."""

    name: str = setting(Choice(tuple(OPTIMIZERS)), "optimiser (eoskeras.training.catalog)", "gd")
    lr: float | None = setting(Nullable(_POSITIVE), "absolute learning rate", None)
    lr_relative: float | None = setting(
        Nullable(_POSITIVE),
        "learning rate as a multiple of the optimiser's stability threshold at "
        "initialisation (2/lambda_max for gd); > 1 trains above it", None)
    momentum: float | None = hyperparameter("momentum", _UNIT_OPEN_TOP,
                                            "heavy-ball / Nesterov coefficient")
    beta_1: float | None = hyperparameter("beta_1", _UNIT_OPEN_TOP, "first-moment decay")
    beta_2: float | None = hyperparameter(
        "beta_2", Number(low=0, high=1, low_open=True, high_open=True), "second-moment decay")
    epsilon: float | None = hyperparameter("epsilon", _POSITIVE, "added to the denominator")
    clip_value: float | None = hyperparameter("clip_value", _POSITIVE,
                                              "the cap c on the denominator sqrt(v)")
    clip_mode: str | None = hyperparameter("clip_mode", Choice(CLIP_MODES),
                                           "ub = min(sqrt(v), c), lb = max(sqrt(v), c)")
    warmup_steps: int = setting(Integer(low=0),
                                "linear warm-up steps, then a constant rate", 2)


@dataclass(frozen=True, kw_only=True)
class StopSpec:
    """When training ends before ``max_steps`` (``training.stop``)."""

    train_accuracy: float | None = setting(
        Nullable(Number(low=0, high=1, low_open=True)),
        "stop when training accuracy reaches this; null = never", 0.999)
    patience: int = setting(Integer(), "consecutive evaluations the condition must hold", 2)
    loss_below: float | None = setting(Nullable(_POSITIVE),
                                       "stop when training loss falls below this", None)
    divergence_factor: float | None = setting(
        Nullable(Number(low=1, low_open=True)),
        "diverged when loss exceeds this times the initial loss; null = only on NaN", 1000.0)
    stall_accuracy: float | None = setting(
        Nullable(Number(low=0, high=1, low_open=True)),
        "stalled when the mean training accuracy over stall_window steps stays below this "
        "(the paper: 0.11); null = never", None)
    stall_window: int = setting(Integer(), "steps the stall_accuracy mean is taken over", 100)


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    """How long to train and in what batches (``training``)."""

    max_steps: int = setting(Integer(), "at most this many optimiser steps", 1000)
    batch_size: int | None = setting(Nullable(Integer()),
                                     "null = full-batch GD; a number = mini-batch SGD", None)
    physical_batch_size: int = setting(Integer(),
                                       "micro-batch for gradient accumulation", 1000)
    log_every: int = setting(Integer(), "steps between logged training metrics", 10)
    eval_test_every: int | None = setting(Nullable(Integer()),
                                          "steps between test evaluations; null = log_every",
                                          None)
    stop: StopSpec = section(StopSpec, "when training ends early")


@dataclass(frozen=True, kw_only=True)
class CurvatureSpec:
    """The Hessian spectrum tracked during training (``curvature``)."""

    enabled: bool = setting(Flag(), "track the top Hessian eigenvalues during training", True)
    every: int = setting(Integer(), "steps between measurements", 10)
    top_k: int = setting(Integer(high=100), "eigenpairs of largest eigenvalue", 10)
    hessian_size: int | None = setting(Nullable(Integer()),
                                       "the first N training examples; null = all", None)
    also_inference: bool = setting(
        Flag(), "also measure lambda_max with BatchNorm in inference mode (moving statistics, the "
                "paper's convention), recorded apart; the threshold ratio is always that of the "
                "trained loss (batch statistics of the train step's chunks)", False)
    dtype: str = setting(Choice(HVP_DTYPES), "floating-point type of Hessian-vector products",
                         "float32")
    hvp_mode: str = setting(Choice(HVP_MODES),
                            "reverse-over-reverse or forward-over-reverse products", "reverse")
    tol: float = setting(Number(low=0, high=1, low_open=True, high_open=True),
                         "relative tolerance of the eigensolver (on what criterion says)", 1e-3)
    criterion: str = setting(Choice(CRITERIA),
                             "what tol bounds: the residual |Hv - lambda v| or the eigenvalue's estimated error "
                             "(residual^2 / gap: fewer HVPs, less exact eigenvectors)", "residual")
    max_hvps: int | None = setting(Nullable(Integer(high=100_000)),
                                   "Hessian-vector products per measurement at most; >= top_k; "
                                   "null = max(40 top_k, 200)", None)
    micro_batch_size: int | None = setting(Nullable(Integer()),
                                           "examples per HVP chunk; null = the train step's chunks "
                                           "(physical_batch_size, or batch_size when smaller); with "
                                           "BatchNorm it must be those chunks",
                                           None)
    auto_k: float | None = setting(Nullable(Number(low=0, low_open=True)),
                                   "c: grow/shrink top_k to track every eigenvalue above c × threshold "
                                   "(e.g. 0.9); null = a fixed top_k", None)
    vectors_every: int = setting(Integer(), "keep the eigenvector files of the first, the latest and "
                                            "every N-th measurement; 1 = the full history", 20)
    vectors_dtype: str = setting(Choice(("float16", "float32")),
                                 "storage type of eigenvector files (float16: similarities within 1e-3)",
                                 "float16")


@dataclass(frozen=True, kw_only=True)
class FlatnessSpec:
    """Flatness measures at the end of training (``flatness``)."""

    enabled: bool = setting(Flag(), "measure flatness at the end of training", False)
    trace_samples: int = setting(Integer(high=100_000), "Hutchinson probe vectors", 100)
    density: bool = setting(Flag(), "estimate the spectral density (stochastic Lanczos)", False)
    density_lanczos_steps: int = setting(Integer(high=10_000), "Lanczos steps per density probe",
                                         80)
    rho: float = setting(_POSITIVE, "SAM radius for rho-sharpness", 0.05)
    noise_sigma: float = setting(_POSITIVE, "std of Gaussian weight noise", 0.01)
    noise_samples: int = setting(Integer(high=100_000), "weight-noise draws", 10)


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """Where a run writes its results (``output``)."""

    dir: str | None = setting(Nullable(RelativeDir()), "run directory; null = runs/<name>", None)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated experiment. Build it with ``parse_recipe`` or ``load_recipe``."""

    name: str = setting(_NAME, "run name (load_recipe defaults it to the file name)")
    description: str = setting(Text(), "what the recipe does", "")
    runtime: str = setting(Choice(RUNTIMES), "expected runtime class", "cpu-minutes")
    seed: int = setting(Integer(low=0, high=2**32 - 1), "seed for initialisation and sampling", 0)
    data: DataSection = section(DataSection, "what to train on", required=True)
    model: ModelSpec = section(ModelSpec, "what to train", required=True)
    loss: str = setting(Choice(LOSSES), "mse = 0.5 * ||f(x) - onehot(y)||^2 averaged over examples",
                        "cross_entropy")
    optimizer: OptimizerSpec = section(OptimizerSpec, "how to step; lr or lr_relative required")
    training: TrainingSpec = section(TrainingSpec, "how long and in what batches")
    curvature: CurvatureSpec = section(CurvatureSpec, "Hessian spectrum during training")
    flatness: FlatnessSpec = section(FlatnessSpec, "flatness measures")
    output: OutputSpec = section(OutputSpec, "where results go")
    strategy: str = setting(Choice(STRATEGIES), "tf.distribute strategy", "default")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested dicts of scalars) that ``parse_recipe`` accepts.

        Example: ``parse_recipe(recipe.to_dict()) == recipe``.
        """
        return _plain(self)


def _plain(section_value: Any) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for name, field in fields_of(type(section_value)).items():
        value = getattr(section_value, name)
        if "section" in field.metadata:
            value = _plain(value)
        elif isinstance(value, FrozenOptions):
            value = dict(value)
        plain[name] = value
    return plain

