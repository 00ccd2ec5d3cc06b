"""eoskeras: gradient descent above the stability threshold, measured.

The public API is exported lazily: ``import eoskeras`` is instant and
TensorFlow loads only when a name that needs it is first used, so the command
line can validate a recipe before paying for the TensorFlow import.

Example:

```python
import eoskeras
oracle = eoskeras.HessianOracle(model, "sparse_categorical_crossentropy", x, y)
spectrum = eoskeras.lanczos(oracle, k=5, seed=0)
print(spectrum.eigenvalues)
```
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {}


def _export(module: str, *names: str) -> None:
    for name in names:
        _EXPORTS[name] = module


_export("eoskeras.curvature.oracle", "HessianOracle")
_export("eoskeras.curvature.objective", "CurvatureObjective")
_export("eoskeras.curvature.choices", "BN_MODES", "HVP_MODES")
_export("eoskeras.curvature.lanczos", "lanczos")
_export("eoskeras.curvature.spectrum", "Spectrum")
_export("eoskeras.curvature.operators", "DenseOperator", "SymmetricOperator")
_export("eoskeras.curvature.tracker", "EigenTracker", "track_top_k")
_export("eoskeras.curvature.trace", "hutchinson_trace", "hutchpp_trace", "TraceEstimate")
_export("eoskeras.curvature.density", "spectral_density", "SpectralDensity")
_export("eoskeras.curvature.similarity", "vector_cosines", "subspace_similarity", "principal_angles")
_export("eoskeras.curvature.operators", "PreconditionedOperator")
_export("eoskeras.curvature.gauss_newton", "GaussNewtonOperator")
_export("eoskeras.curvature.restricted", "RestrictedOperator", "select_parameters", "layer_spectra",
        "LayerSpectrum", "parameter_blocks")
_export("eoskeras.curvature.landscape", "landscape_slice", "LandscapeSlice", "eigen_directions", "random_directions",
        "filter_normalized_direction", "loss_and_accuracy")
_export("eoskeras.curvature.flatness", "rho_sharpness", "noise_sharpness")
_export("eoskeras.training.full_batch", "FullBatchModel")
_export("eoskeras.training.optimizers", "ClippedAdam", "ClippedRMSprop", "WarmupConstant", "make_optimizer")
_export("eoskeras.training.thresholds", "stability_threshold", "threshold_learning_rate", "preconditioner")
_export("eoskeras.training.monitor", "SharpnessMonitor")
_export("eoskeras.training.flatness_report", "FlatnessReport")
_export("eoskeras.training.stopping", "StopConditions")
_export("eoskeras.training.evaluation", "evaluate_network")
_export("eoskeras.training.verify", "train_step_sharpness", "SharpnessCheck")
_export("eoskeras.data.spec", "DataSpec", "DataUnavailableError")
_export("eoskeras.data.loading", "load_data", "DataBundle")
_export("eoskeras.models.registry", "build_model")

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eoskeras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
