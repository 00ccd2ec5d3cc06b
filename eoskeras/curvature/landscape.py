"""Loss-landscape slices through the current weights (Li et al. 2018).

A slice is the loss (and accuracy) at w + α d₁ (1-D) or w + α d₁ + β d₂ (2-D)
on a grid of α, β. Directions are the top Hessian eigenvectors (unit norm, so
α is a distance in weight space and the slice's curvature at 0 is λ) or
filter-normalised Gaussian directions: each filter of d is scaled to the norm
of the same filter of w, and the directions of biases and normalisation
parameters (every variable of rank ≤ 1) are zero, as Li et al. do.

Every point is the oracle's loss (batch-mode BatchNorm statistics per
micro-batch when the oracle is in batch mode, dropout off) evaluated
statelessly at explicit weights: the model's weights and BatchNorm moving
statistics are never touched.

Example:

```python
oracle = HessianOracle(model, "cross_entropy", x, y)
directions, eigenvalues = eigen_directions(oracle, 2)   # the top two eigenvectors and their λ
s = landscape_slice(oracle, directions, span=0.5, points=21)
s.loss.shape, s.accuracy.shape     # (21, 21)
```
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from eoskeras.curvature.lanczos import lanczos
from eoskeras.curvature.oracle import HessianOracle


def _filter_norms(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.sqrt(np.sum(np.square(a), axis=axes, keepdims=True))


def filter_normalized_direction(weights: np.ndarray, shapes: Sequence[tuple[int, ...]],
                                rng: np.random.Generator) -> np.ndarray:
    """A Gaussian direction with each filter scaled to its weights' filter norm.

    A filter is everything feeding one output unit: the last axis of a Dense
    kernel (in, out) or a Conv kernel (h, w, in, out) indexes filters.
    Variables of rank ≤ 1 (biases, BatchNorm γ/β) get a zero direction.
    """
    parts, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        w = np.asarray(weights[start:start + size]).reshape(shape)
        start += size
        if len(shape) <= 1:
            parts.append(np.zeros(size))
            continue
        d = rng.standard_normal(shape)
        axes = tuple(range(len(shape) - 1))
        d *= _filter_norms(w, axes) / (_filter_norms(d, axes) + 1e-12)
        parts.append(d.ravel())
    return np.concatenate(parts)


def random_directions(oracle: HessianOracle, count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """``count`` filter-normalised random directions at the oracle's current weights."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(v.shape) for v in oracle.model.trainable_variables]
    weights = oracle.weights()
    return [filter_normalized_direction(weights, shapes, rng) for _ in range(count)]


def eigen_directions(oracle: HessianOracle, count: int = 2, *, tol: float = 1e-6, seed: int = 0
                     ) -> tuple[list[np.ndarray], np.ndarray]:
    """The top-``count`` Hessian eigenvectors (unit norm) and their eigenvalues."""
    spectrum = lanczos(oracle, k=count, tol=tol, seed=seed)
    return [spectrum.eigenvectors[:, i] for i in range(count)], spectrum.eigenvalues


def loss_and_accuracy(oracle: HessianOracle, at: np.ndarray | None = None) -> tuple[float, float]:
    """The oracle's mean loss and the accuracy (argmax of the outputs) at ``at``."""
    return oracle.objective.loss_and_accuracy(at)


@dataclass(frozen=True)
class LandscapeSlice:
    """Loss and accuracy on a grid: ``loss[i]`` at α = ``alphas[i]`` (1-D), or
    ``loss[i, j]`` at (α, β) = (``alphas[i]``, ``betas[j]``) (2-D)."""

    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray
    directions: str
    eigenvalues: np.ndarray | None = None

    def record(self) -> dict:
        out = {"directions": self.directions, "alphas": self.alphas.tolist(), "loss": self.loss.tolist(),
               "accuracy": self.accuracy.tolist()}
        if self.betas is not None:
            out["betas"] = self.betas.tolist()
        if self.eigenvalues is not None:
            out["eigenvalues"] = [float(e) for e in self.eigenvalues]
        return out


def landscape_slice(oracle: HessianOracle, directions: Sequence[np.ndarray], *, span: float = 1.0,
                    points: int = 21, label: str = "custom", eigenvalues: np.ndarray | None = None
                    ) -> LandscapeSlice:
    """Loss and accuracy at w + α d₁ (+ β d₂) for α, β in [−span, span].

    One direction gives a 1-D slice, two a 2-D one (``points`` × ``points``
    evaluations of the full data set).
    """
    if len(directions) not in (1, 2):
        raise ValueError(f"directions: got {len(directions)}; allowed: 1 (a line) or 2 (a plane)")
    if points < 3:
        raise ValueError(f"points: got {points}; allowed: an integer >= 3")
    if not span > 0:
        raise ValueError(f"span: got {span}; allowed: a number > 0")
    center = oracle.weights()
    grid = np.linspace(-span, span, points)
    evaluate = oracle.objective.loss_and_accuracy
    if len(directions) == 1:
        values = np.array([evaluate(center + a * directions[0]) for a in grid])
        return LandscapeSlice(grid, None, values[:, 0], values[:, 1], label, eigenvalues)
    d1, d2 = directions
    values = np.array([[evaluate(center + a * d1 + b * d2) for b in grid] for a in grid])
    return LandscapeSlice(grid, grid.copy(), values[..., 0], values[..., 1], label, eigenvalues)
