"""The optimisers and losses eoskeras trains with (no TensorFlow import).

One entry per optimiser holds every fact about it except its update rule
(``training/optimizers.py``): the hyperparameters with their defaults, the
threshold constant c and whether it is adaptive. Recipe validation, the
builders and the thresholds all read this table, so adding an optimiser is
one entry here plus its Keras builder; a test checks that every entry builds.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

LOSSES: tuple[str, ...] = ("cross_entropy", "mse")
CLIP_MODES: tuple[str, ...] = ("ub", "lb")

Hyperparameters = Mapping[str, float | str | None]


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    # Hyperparameter (as make_optimizer names it) -> default; None: no default,
    # a recipe must state it (make_optimizer leaves it to the Keras class).
    defaults: Hyperparameters
    # c(hyperparameters): stable on a quadratic while sharpness < c / lr.
    threshold: Callable[[Hyperparameters], float]
    # The threshold applies to the preconditioned sharpness λ_max(P⁻¹H).
    adaptive: bool


def _heavy_ball(h: Hyperparameters) -> float:
    # Keras's RMSprop may carry heavy-ball momentum too; make_optimizer's never does.
    return 2 + 2 * float(h.get("momentum", 0.0))


def _nesterov(h: Hyperparameters) -> float:
    momentum = float(h["momentum"])
    return (2 + 2 * momentum) / (1 + 2 * momentum)


def _adam(h: Hyperparameters) -> float:
    beta_1 = float(h["beta_1"])
    return (2 + 2 * beta_1) / (1 - beta_1)


# Defaults follow optax (the paper's code): epsilon 1e-8, RMSProp decay 0.9.
_RMSPROP = {"rho": 0.9, "epsilon": 1e-8}
_ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}
_CLIPPED = {"clip_value": None, "clip_mode": None}

OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo("gd", {}, lambda h: 2.0, False),
        OptimizerInfo("momentum", {"momentum": 0.9}, _heavy_ball, False),
        OptimizerInfo("nesterov", {"momentum": 0.9}, _nesterov, False),
        OptimizerInfo("rmsprop", _RMSPROP, _heavy_ball, True),
        OptimizerInfo("adam", _ADAM, _adam, True),
        # Wang & Roberts' variants: the denominator sqrt(v) clipped at clip_value.
        OptimizerInfo("clipped_rmsprop", _RMSPROP | _CLIPPED, _heavy_ball, True),
        OptimizerInfo("clipped_adam", _ADAM | _CLIPPED, _adam, True),
    )
}

# Every hyperparameter some optimiser reads; named as Keras's attributes are.
HYPERPARAMETER_NAMES: frozenset[str] = frozenset(key for info in OPTIMIZERS.values() for key in info.defaults)


def hyperparameters(name: str, given: Mapping[str, float | str]) -> dict[str, float | str | None]:
    """Optimiser ``name``'s hyperparameters: those in ``given`` that it reads,
    the catalogue's defaults for the rest (None where it has none)."""
    return {key: given.get(key, default) for key, default in OPTIMIZERS[name].defaults.items()}
