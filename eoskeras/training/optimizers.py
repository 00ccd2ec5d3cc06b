"""Optimisers for training above the stability threshold.

Plain GD, heavy-ball and Nesterov momentum are Keras's ``SGD``; RMSProp and
Adam are Keras's own. This module adds Wang & Roberts' clipped variants,
which cap the adaptive denominator to restore the instabilities that
adaptive methods suppress, and a linear warm-up schedule.

Example:

```python
opt = make_optimizer("clipped_adam", learning_rate=1e-3, clip_value=1.0, clip_mode="ub",
                     warmup_steps=2)
model.compile(optimizer=opt)
```
"""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from eoskeras.training.catalog import CLIP_MODES, HYPERPARAMETER_NAMES, OPTIMIZERS, hyperparameters


def clip_denominator(root_v, clip_value: float, clip_mode: str):
    """min(√v̂, c) for "ub" (capped above), max(√v̂, c) for "lb" (floored)."""
    c = ops.cast(clip_value, root_v.dtype)
    return ops.minimum(root_v, c) if clip_mode == "ub" else ops.maximum(root_v, c)


def _check_clip(clip_value: float, clip_mode: str) -> None:
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode: got {clip_mode!r}; allowed: {', '.join(CLIP_MODES)}")
    if not clip_value > 0:
        raise ValueError(f"clip_value: got {clip_value!r}; allowed: a number > 0")


@keras.saving.register_keras_serializable(package="eoskeras")
class ClippedAdam(keras.optimizers.Adam):
    """Adam with the denominator clipped: update = η m̂ / (clip(√v̂, c) + ε).

    ``clip_mode="ub"`` caps √v̂ at c (the paper's Clipped-Ada, restoring
    instabilities); ``"lb"`` floors it at c.
    """

    def __init__(self, *args: Any, clip_value: float = 1.0, clip_mode: str = "ub", **kwargs: Any) -> None:
        _check_clip(clip_value, clip_mode)
        super().__init__(*args, **kwargs)
        self.clip_value, self.clip_mode = clip_value, clip_mode

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, (gradient - m) * (1 - self.beta_1))
        self.assign_add(v, (ops.square(gradient) - v) * (1 - self.beta_2))
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, dtype), step))
        v_hat = v / (1 - ops.power(ops.cast(self.beta_2, dtype), step))
        denominator = clip_denominator(ops.sqrt(v_hat), self.clip_value, self.clip_mode) + self.epsilon
        self.assign_sub(variable, lr * m_hat / denominator)

    def get_config(self) -> dict:
        return {**super().get_config(), "clip_value": self.clip_value, "clip_mode": self.clip_mode}


@keras.saving.register_keras_serializable(package="eoskeras")
class ClippedRMSprop(keras.optimizers.RMSprop):
    """RMSProp with the denominator clipped: update = η g / (clip(√v, c) + ε)."""

    def __init__(self, *args: Any, clip_value: float = 1.0, clip_mode: str = "ub", **kwargs: Any) -> None:
        _check_clip(clip_value, clip_mode)
        super().__init__(*args, **kwargs)
        if self.centered or self.momentum:
            raise ValueError("ClippedRMSprop supports neither centered=True nor momentum")
        self.clip_value, self.clip_mode = clip_value, clip_mode

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(v, self.rho * v + (1 - self.rho) * ops.square(gradient))
        denominator = clip_denominator(ops.sqrt(v), self.clip_value, self.clip_mode) + self.epsilon
        self.assign_sub(variable, lr * gradient / denominator)

    def get_config(self) -> dict:
        return {**super().get_config(), "clip_value": self.clip_value, "clip_mode": self.clip_mode}


@keras.saving.register_keras_serializable(package="eoskeras")
class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over ``warmup_steps`` steps, then constant ``learning_rate``
    (the paper's 2-step warm-up). Step t (0-based) uses lr · min(1, (t+1)/warmup)."""

    def __init__(self, learning_rate: float, warmup_steps: int = 2) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps: got {warmup_steps}; allowed: an integer >= 0")
        self.learning_rate, self.warmup_steps = float(learning_rate), int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return ops.cast(self.learning_rate, "float32") + 0.0 * step
        return self.learning_rate * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


# The Keras class of each catalogue optimiser, and the constructor arguments
# that tell it apart from the others built on the same class.
_BUILDERS: dict[str, tuple[type[keras.optimizers.Optimizer], dict[str, Any]]] = {
    "gd": (keras.optimizers.SGD, {"momentum": 0.0, "nesterov": False}),
    "momentum": (keras.optimizers.SGD, {"nesterov": False}),
    "nesterov": (keras.optimizers.SGD, {"nesterov": True}),
    "rmsprop": (keras.optimizers.RMSprop, {}),
    "adam": (keras.optimizers.Adam, {}),
    "clipped_rmsprop": (ClippedRMSprop, {}),
    "clipped_adam": (ClippedAdam, {}),
}


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    *,
    warmup_steps: int = 0,
    **given: float | str,
) -> keras.optimizers.Optimizer:
    """Build optimiser ``name`` of ``eoskeras.training.catalog.OPTIMIZERS``.

    ``given`` sets its hyperparameters (e.g. ``momentum``, ``rho``,
    ``epsilon``); the others take the catalogue's defaults, and ones it does
    not read are ignored. A float ``learning_rate`` may get a linear warm-up,
    a Keras schedule is used as given.
    """
    if unknown := sorted(set(given) - HYPERPARAMETER_NAMES):
        raise TypeError(f"make_optimizer() got unexpected hyperparameters {unknown}; "
                        f"known: {', '.join(sorted(HYPERPARAMETER_NAMES))}")
    lr: Any = learning_rate
    if warmup_steps:
        if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError("warmup_steps applies to a constant learning rate, not to a schedule")
        lr = WarmupConstant(learning_rate, warmup_steps)
    if name not in _BUILDERS:
        raise ValueError(f"optimizer: got {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    cls, fixed = _BUILDERS[name]
    hyper = {key: value for key, value in hyperparameters(name, given).items() if value is not None}
    return cls(lr, **fixed, **hyper)


def catalog_name(optimizer: keras.optimizers.Optimizer) -> str | None:
    """The catalogue optimiser ``optimizer`` is: the entry of the nearest class
    in its MRO whose distinguishing arguments it has (so a Keras ``SGD`` with
    momentum is "momentum", a subclass of Adam is "adam"); None for others."""
    for cls in type(optimizer).__mro__:
        for name, (built, fixed) in _BUILDERS.items():
            if built is cls and all(getattr(optimizer, key) == value for key, value in fixed.items()):
                return name
    return None
