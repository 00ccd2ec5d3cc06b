"""FlatnessReport: flatness, accuracy and generalisation gap at the end of
training (or whenever ``measure`` is called).

Example:

```python
report = FlatnessReport(x_train[:5000], y_train[:5000], x_test, y_test, rho=0.05)
model.fit(x_train, y_train, epochs=5, callbacks=[report])
report.result["lambda_max"], report.result["trace"], report.result["test_accuracy"]
```
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from eoskeras.curvature.density import SpectralDensity, spectral_density
from eoskeras.curvature.flatness import noise_sharpness, rho_sharpness
from eoskeras.curvature.gauss_newton import GaussNewtonOperator
from eoskeras.curvature.lanczos import lanczos
from eoskeras.curvature.oracle import HessianOracle
from eoskeras.curvature.trace import hutchpp_trace
from eoskeras.training.evaluation import evaluate_network
from eoskeras.training.measured import curvature_operator
from eoskeras.training.monitor import loss_of, network_of
from eoskeras.training.thresholds import stability_threshold


class FlatnessReport(keras.callbacks.Callback):
    """λ_max and top-k (Lanczos), trace (Hutch++), ρ-sharpness, Gaussian-noise
    loss increase, optional spectral density, and train/test loss and
    accuracy with their gaps. The curvature is that of the plain Hessian.

    Args:
        x, y: the Hessian's data (also the "train" set of the report).
        x_test, y_test: optional test set.
        top_k, tol: Lanczos eigenpairs and relative residual tolerance.
        trace_hvps: HVP budget of Hutch++.
        rho: SAM radius of the ρ-sharpness.
        noise_sigma, noise_samples: Gaussian weight-noise std and draws.
        density_steps: Lanczos steps per SLQ vector (0: no density).
        gauss_newton: also measure the Gauss-Newton λ_max (``ggn_lambda_max``)
            and its ratio to the Hessian's (``ggn_hessian_ratio``).
        strategy: the ``tf.distribute`` strategy for the HVPs (default: current).
        oracle: an existing oracle over (x, y) to reuse (its modes then apply).
    """

    def __init__(self, x, y, x_test=None, y_test=None, *, loss: Any = None, top_k: int = 5, tol: float = 1e-4,
                 trace_hvps: int = 99, rho: float = 0.05, noise_sigma: float = 0.01, noise_samples: int = 10,
                 density_steps: int = 0, density_vectors: int = 4, bn_mode: str = "batch", dtype: str = "float32",
                 hvp_mode: str = "reverse", micro_batch_size: int = 1000, seed: int = 0,
                 strategy=None, oracle: HessianOracle | None = None, gauss_newton: bool = True) -> None:
        super().__init__()
        self.x, self.y, self.x_test, self.y_test, self.loss = x, y, x_test, y_test, loss
        self.top_k, self.tol, self.trace_hvps, self.rho = top_k, tol, trace_hvps, rho
        self.noise_sigma, self.noise_samples = noise_sigma, noise_samples
        self.density_steps, self.density_vectors, self.seed = density_steps, density_vectors, seed
        self.oracle_options = dict(bn_mode=bn_mode, dtype=dtype, hvp_mode=hvp_mode, micro_batch_size=micro_batch_size,
                                   strategy=strategy)
        self.result: dict[str, Any] | None = None
        self.spectrum = None
        self.density: SpectralDensity | None = None
        self.oracle = oracle
        self.gauss_newton = gauss_newton

    def on_train_end(self, logs=None):
        if not self._diverged():
            self.result = self.measure(self.model)

    def _diverged(self) -> bool:
        return not all(np.all(np.isfinite(v.numpy())) for v in self.model.trainable_variables)

    def measure(self, model: keras.Model) -> dict[str, Any]:
        network, loss = network_of(model), loss_of(model, self.loss)
        oracle = self.oracle or HessianOracle(network, loss, self.x, self.y, **self.oracle_options)
        self.spectrum = lanczos(oracle, k=self.top_k, tol=self.tol, seed=self.seed)
        trace = hutchpp_trace(oracle, self.trace_hvps, seed=self.seed)
        noise, noise_stderr = noise_sharpness(oracle, self.noise_sigma, self.noise_samples, seed=self.seed)
        optimizer = getattr(model, "optimizer", None)
        threshold = stability_threshold(optimizer) if optimizer is not None else None
        op, preconditioned = curvature_operator(oracle, optimizer)
        sharpness = lanczos(op, k=1, tol=self.tol, seed=self.seed) if preconditioned else self.spectrum
        result: dict[str, Any] = {
            **({"preconditioned_lambda_max": sharpness.lambda_max,
                "preconditioned_converged": sharpness.converged} if preconditioned else {}),
            "lambda_max": self.spectrum.lambda_max,
            "eigenvalues": [float(e) for e in self.spectrum.eigenvalues],
            "eig_residuals": [float(r) for r in self.spectrum.relative_residuals],
            "eig_hvps": self.spectrum.num_hvps,
            "eig_converged": self.spectrum.converged,
            "threshold": threshold,
            "sharpness_ratio": sharpness.lambda_max / threshold if threshold else None,
            "preconditioned": preconditioned,
            "trace": trace.value,
            "trace_stderr": trace.stderr,
            "trace_hvps": trace.num_hvps,
            "rho": self.rho,
            "rho_sharpness": rho_sharpness(oracle, self.rho),
            "noise_sigma": self.noise_sigma,
            "noise_sharpness": noise,
            "noise_sharpness_stderr": noise_stderr,
            "hessian": oracle.describe(),
        }
        if self.gauss_newton:
            ggn = lanczos(GaussNewtonOperator(oracle), k=1, tol=self.tol, seed=self.seed)
            hessian = self.spectrum.lambda_max
            # A Hessian whose top eigenvalue is 0 (e.g. a dead network) has no ratio to report.
            result.update(ggn_lambda_max=ggn.lambda_max, ggn_hvps=ggn.num_hvps,
                          ggn_hessian_ratio=ggn.lambda_max / hessian if hessian else None)
        if self.density_steps:
            self.density = spectral_density(oracle, self.density_vectors, self.density_steps, seed=self.seed)
        train_loss, train_acc = evaluate_network(network, loss, self.x, self.y)
        result.update(train_loss=train_loss, train_accuracy=train_acc)
        if self.x_test is not None:
            test_loss, test_acc = evaluate_network(network, loss, self.x_test, self.y_test)
            result.update(test_loss=test_loss, test_accuracy=test_acc,
                          accuracy_gap=train_acc - test_acc, loss_gap=test_loss - train_loss)
        return result
