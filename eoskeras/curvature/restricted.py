"""Curvature restricted to a subset of the weights: per-layer spectra.

The restriction of a symmetric operator H to the coordinates S is the block
H[S, S]: embed v into the full vector (zeros elsewhere), apply H, keep S.
It wraps any operator (Hessian oracle, GGN, Fisher, preconditioned).

Example:

```python
blocks = parameter_blocks(model)                       # {"dense": indices, "dense_1": ...}
sub = RestrictedOperator(oracle, select_parameters(model, "dense_1"))
lanczos(sub, k=3).eigenvalues                          # of the block H[S, S]
layer_spectra(oracle, model, layers="conv.*", top_k=1)  # λ_max and trace per layer
```
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np

from eoskeras.curvature.lanczos import lanczos
from eoskeras.curvature.operators import SymmetricOperator, apply_block, describe_operator
from eoskeras.curvature.trace import hutchpp_trace


def parameter_blocks(model: keras.Model) -> dict[str, np.ndarray]:
    """Flat indices (in the oracle's vector order) of each layer's trainable
    weights, keyed by the layer's path inside the model (a variable's path
    without the model's name and the variable's own)."""
    blocks: dict[str, list[np.ndarray]] = {}
    start = 0
    prefix = model.name + "/"
    for variable in model.trainable_variables:
        size = int(np.prod(variable.shape))
        path = variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path
        layer = path.rsplit("/", 1)[0] if "/" in path else path
        blocks.setdefault(layer, []).append(np.arange(start, start + size))
        start += size
    return {name: np.concatenate(parts) for name, parts in blocks.items()}


def matching_blocks(model: keras.Model, layers: str | Sequence[str]) -> dict[str, np.ndarray]:
    """The layer blocks named in ``layers`` (a list of layer names or paths) or
    whose path matches ``layers`` (a regular expression, ``re.search``)."""
    blocks = parameter_blocks(model)
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as err:
            raise ValueError(f"layers: {layers!r} is not a regular expression ({err})") from None
        chosen = {name: idx for name, idx in blocks.items() if pattern.search(name)}
    else:
        chosen = {name: idx for name, idx in blocks.items() if name in layers or name.rsplit("/", 1)[-1] in layers}
        missing = [n for n in layers if not any(n in (b, b.rsplit("/", 1)[-1]) for b in chosen)]
        if missing:
            raise ValueError(f"layers: no trainable layer named {', '.join(map(repr, missing))}; "
                             f"allowed: {', '.join(blocks)}")
    if not chosen:
        raise ValueError(f"layers: {layers!r} matches no trainable layer; allowed: {', '.join(blocks)}")
    return chosen


def select_parameters(model: keras.Model, layers: str | Sequence[str]) -> np.ndarray:
    """Sorted flat indices of every weight in the layers ``matching_blocks`` picks."""
    return np.sort(np.concatenate(list(matching_blocks(model, layers).values())))


class RestrictedOperator:
    """The block H[S, S] of a symmetric operator H for the coordinates S."""

    def __init__(self, op: SymmetricOperator, indices: np.ndarray, name: str | None = None) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or not len(indices) or len(np.unique(indices)) != len(indices) \
                or indices.min() < 0 or indices.max() >= op.dim:
            raise ValueError(f"indices: expected distinct integers in [0, {op.dim}), got {len(indices)} of them")
        self.op, self.indices, self.dim, self.name = op, indices, len(indices), name

    def matvec(self, v: np.ndarray) -> np.ndarray:
        full = np.zeros(self.op.dim)
        full[self.indices] = v
        return np.asarray(self.op.matvec(full), dtype=np.float64)[self.indices]

    def matmat(self, block: np.ndarray) -> np.ndarray:
        full = np.zeros((self.op.dim, block.shape[1]))
        full[self.indices] = block
        return apply_block(self.op, full)[self.indices]

    def describe(self) -> dict[str, Any]:
        return {**describe_operator(self.op), "restricted_to": self.name, "restricted_params": self.dim}


@dataclass(frozen=True)
class LayerSpectrum:
    """Top-k eigenvalues and the trace of one layer's block (``None``: not measured)."""

    layer: str
    num_params: int
    eigenvalues: np.ndarray
    trace: float | None
    trace_stderr: float | None
    num_hvps: int

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[0])

    def record(self) -> dict[str, Any]:
        return {"layer": self.layer, "num_params": self.num_params, "lambda_max": self.lambda_max,
                "eigenvalues": [float(e) for e in self.eigenvalues], "trace": self.trace,
                "trace_stderr": self.trace_stderr, "num_hvps": self.num_hvps}


def layer_spectra(op: SymmetricOperator, model: keras.Model, layers: str | Sequence[str] = ".*", *,
                  top_k: int = 1, tol: float = 1e-4, trace_hvps: int = 30, seed: int = 0) -> list[LayerSpectrum]:
    """λ_max, top-k and trace of ``op`` restricted to each selected layer.

    A block no larger than ``trace_hvps`` gets its exact trace (one product
    per coordinate, standard error 0); larger ones Hutch++; ``trace_hvps=0``
    skips the trace.
    """
    out = []
    for name, indices in matching_blocks(model, layers).items():
        sub = RestrictedOperator(op, indices, name)
        spectrum = lanczos(sub, k=min(top_k, sub.dim), tol=tol, seed=seed)
        if not trace_hvps:
            trace, stderr, trace_cost = None, None, 0
        elif sub.dim <= trace_hvps:
            trace, stderr, trace_cost = float(np.trace(sub.matmat(np.eye(sub.dim)))), 0.0, sub.dim
        else:
            estimate = hutchpp_trace(sub, max(trace_hvps, 3), seed=seed)
            trace, stderr, trace_cost = estimate.value, estimate.stderr, estimate.num_hvps
        out.append(LayerSpectrum(name, sub.dim, spectrum.eigenvalues, trace, stderr,
                                 spectrum.num_hvps + trace_cost))
    return out
