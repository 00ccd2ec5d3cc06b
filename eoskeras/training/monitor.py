"""SharpnessMonitor: the Hessian's top-k, the stability threshold and the
rotation of the leading eigenvectors, every k steps, into Keras ``logs``.

Works in any ``model.fit``: with a ``FullBatchModel`` it measures the loss
the model trains on; with an ordinary compiled Keras model it uses the
compiled loss.

Example:

```python
monitor = SharpnessMonitor(x_train[:5000], y_train[:5000], every=10, top_k=5)
model.fit(x, y, epochs=20, callbacks=[monitor, keras.callbacks.CSVLogger("log.csv")])
monitor.records[-1]["lambda_max"], monitor.records[-1]["sharpness_ratio"]
```

Logged keys (carried forward between measurements unless
``carry_forward=False``; ``curvature_step`` says which step they belong
to): ``lambda_max``, ``lambda_2`` … ``lambda_k``, ``threshold`` (e.g. 2/η),
``sharpness_ratio`` (λ_max / threshold), ``eig_residual`` (largest relative
residual), ``eig_hvps``, ``eig_converged`` (1 when every pair met
``tol`` on ``criterion``'s bound, 0 when the HVP budget ran out first),
``similarity_prev`` and ``similarity_first`` (Wang & Roberts' subspace
similarity of the top-k eigenvectors to the previous and the first
measurement) and ``cosine_first`` (|cos| of the top eigenvector to the first
one). For RMSProp/Adam (and the clipped variants) the eigenvalues are those
of the preconditioned Hessian P⁻¹H, the quantity their threshold applies to.

With an ``inference_oracle`` (the same loss with BatchNorm's moving
statistics) each measurement also records ``lambda_max_inference``: a second,
labelled number for comparison with papers that measure in inference mode.
The threshold ratio never uses it.
"""
from __future__ import annotations

import math
import time
from typing import Any

import keras
import numpy as np

from eoskeras.curvature.oracle import HessianOracle
from eoskeras.curvature.restricted import layer_spectra
from eoskeras.curvature.similarity import subspace_similarity, vector_cosines
from eoskeras.curvature.tracker import EigenTracker
from eoskeras.training.auto_k import count_above, grow_until_below, starting_k
from eoskeras.training.measured import curvature_operator
from eoskeras.training.thresholds import stability_threshold


def network_of(model: keras.Model) -> keras.Model:
    """The measurable network inside a FullBatchModel, or the model itself."""
    return getattr(model, "network", model)


def loss_of(model: keras.Model, loss: Any = None) -> Any:
    """The loss to measure: given, a FullBatchModel's, or the compiled one."""
    if loss is not None:
        return loss
    for candidate in (getattr(model, "loss_name", None), getattr(model, "loss", None)):
        if candidate is not None:
            return candidate
    raise ValueError("pass loss=... : the model has neither a FullBatchModel loss nor a compiled one")


class SharpnessMonitor(keras.callbacks.Callback):
    """Measure the top-k Hessian eigenpairs every ``every`` training steps.

    Args:
        x, y: the Hessian's data (e.g. the first 5,000 training examples).
        loss: the loss; by default the model's own.
        every: steps between measurements (also measured before step 1).
        top_k: number of eigenpairs, warm-started from the previous ones.
        tol: relative tolerance of the eigensolver (on ``criterion``'s bound).
        criterion: what ``tol`` bounds: ``"residual"`` (the default) or
            ``"eigenvalue"``, the eigenvalues' estimated error (residual² /
            gap; fewer HVPs, less exact vectors: see ``track_top_k``).
        max_hvps: HVPs per measurement at most (default: sized from ``top_k``).
        bn_mode, dtype, hvp_mode, micro_batch_size: as in ``HessianOracle``.
        keep_vectors: keep every measurement's eigenvectors in
            ``vector_history`` (for saving), not only the first and latest.
        strategy: the ``tf.distribute`` strategy for the HVPs (default: current).
        oracle: an existing oracle over (x, y) to reuse (its modes then apply).
        inference_oracle: an oracle of the same data with BatchNorm in
            inference mode; its λ_max is recorded apart (``lambda_max_inference``).
        layers: a regex of layer paths; each measurement then also records
            the λ_max of the curvature restricted to each matching layer
            (``record["layer_lambda_max"]``, logs ``lambda_max/<layer>``).
        auto_k: c (e.g. 0.9): grow or shrink the number of eigenpairs so that
            every eigenvalue above c × threshold is tracked (``auto_k.py``),
            at least ``top_k`` and at most ``max_k``; records and logs
            ``num_above`` and ``top_k``. Similarities use the leading
            ``top_k`` vectors; ``lambda_i`` logs stop at ``top_k``.
        carry_forward: put the latest measurement into every epoch's logs,
            so History and CSVLogger columns line up (the default); with
            False only the epoch it was measured in gets it, so TensorBoard
            plots one point per measurement instead of writing the same
            values every step (on the quickstart those repeats cost 4.7 s,
            as much as half the measuring; ``benchmarks/monitor_overhead.py``).
    """

    def __init__(self, x, y, *, loss: Any = None, every: int = 10, top_k: int = 5, tol: float = 1e-3,
                 bn_mode: str = "batch", dtype: str = "float32", hvp_mode: str = "reverse",
                 micro_batch_size: int = 1000, max_hvps: int | None = None, seed: int = 0,
                 keep_vectors: bool = False, strategy=None, oracle: HessianOracle | None = None,
                 inference_oracle: HessianOracle | None = None, layers: str | None = None,
                 auto_k: float | None = None, max_k: int = 64, carry_forward: bool = True,
                 criterion: str = "residual") -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every: got {every}; allowed: an integer >= 1")
        self.x, self.y, self.loss, self.every = x, y, loss, every
        self.oracle_options = dict(bn_mode=bn_mode, dtype=dtype, hvp_mode=hvp_mode, micro_batch_size=micro_batch_size,
                                   strategy=strategy)
        self.tracker = EigenTracker(top_k, tol=tol, max_hvps=max_hvps, seed=seed, criterion=criterion)
        self.inference_oracle = inference_oracle
        self.inference_tracker = (EigenTracker(1, tol=tol, max_hvps=max_hvps, seed=seed, criterion=criterion)
                                  if inference_oracle else None)
        self.keep_vectors = keep_vectors
        self.records: list[dict[str, Any]] = []
        self.vector_history: list[tuple[int, np.ndarray]] = []
        self.first_vectors: np.ndarray | None = None
        self.latest_logs: dict[str, float] = {}
        self.carry_forward, self._unlogged = carry_forward, False
        self._oracle: HessianOracle | None = oracle
        self.layers = layers
        if auto_k is not None and not auto_k > 0:
            raise ValueError(f"auto_k: got {auto_k}; allowed: a number > 0 (c in c x threshold), or None")
        self.top_k, self.auto_k, self.max_k = top_k, auto_k, max(max_k, top_k)

    # ---------------------------------------------------------------- Keras
    def on_train_begin(self, logs=None):
        self._maybe_measure(logs)

    def on_train_batch_end(self, batch, logs=None):
        self._maybe_measure(logs)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and (self.carry_forward or self._unlogged):
            logs.update(self.latest_logs)
        self._unlogged = False

    # --------------------------------------------------------------- public
    @property
    def oracle(self) -> HessianOracle:
        if self._oracle is None:
            self._oracle = HessianOracle(network_of(self.model), loss_of(self.model, self.loss), self.x, self.y,
                                         **self.oracle_options)
        return self._oracle

    def measure(self, step: int) -> dict[str, Any]:
        """Measure now and record the result under ``step``."""
        start = time.perf_counter()
        optimizer = getattr(self.model, "optimizer", None)
        op, preconditioned = curvature_operator(self.oracle, optimizer)
        threshold = stability_threshold(optimizer) if optimizer is not None else None
        level = self.auto_k * threshold if self.auto_k is not None and threshold else None
        if level is not None:
            previous_values = self.records[-1]["eigenvalues"] if self.records else None
            self.tracker.k = starting_k(previous_values, level, self.top_k, self.max_k)
        spectrum = self.tracker.update(op)
        if level is not None:
            spectrum = grow_until_below(self.tracker, op, spectrum, level, self.max_k)
        vectors = spectrum.eigenvectors[:, :self.top_k]
        record: dict[str, Any] = {
            "step": step,
            "lambda_max": spectrum.lambda_max,
            "eigenvalues": [float(e) for e in spectrum.eigenvalues],
            "threshold": threshold,
            "sharpness_ratio": spectrum.lambda_max / threshold if threshold else None,
            "eig_residual": float(spectrum.relative_residuals.max()),
            "eig_hvps": spectrum.num_hvps,
            "converged": spectrum.converged,
            "criterion": spectrum.criterion,
            "preconditioned": preconditioned,
        }
        if self.inference_tracker is not None:
            inference = self.inference_tracker.update(curvature_operator(self.inference_oracle, optimizer)[0])
            record.update(lambda_max_inference=inference.lambda_max,
                          inference_residual=float(inference.relative_residuals.max()),
                          inference_hvps=inference.num_hvps, inference_converged=inference.converged)
        if self.first_vectors is None:
            self.first_vectors = vectors
        previous = self.records[-1].get("_vectors") if self.records else None
        # The tracker's Ritz vectors are orthonormal (to about 1e-13).
        record["similarity_first"] = subspace_similarity(self.first_vectors, vectors, orthonormal=True)
        record["cosine_first"] = float(vector_cosines(self.first_vectors[:, 0], vectors[:, 0])[0])
        record["similarity_prev"] = (subspace_similarity(previous, vectors, orthonormal=True) if previous is not None
                                     else 1.0)
        if level is not None:
            record.update(num_above=count_above(spectrum.eigenvalues, level), top_k=len(spectrum.eigenvalues))
        if self.layers:
            record["layer_lambda_max"] = {s.layer: s.lambda_max for s in layer_spectra(
                op, self.oracle.model, self.layers, tol=self.tracker.tol, trace_hvps=0)}
        record["seconds"] = time.perf_counter() - start
        if self.records:
            self.records[-1].pop("_vectors", None)
        self.records.append({**record, "_vectors": vectors})
        if self.keep_vectors:
            self.vector_history.append((step, vectors))
        self.latest_logs, self._unlogged = self._as_logs(record), True
        return record

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that ``load_state`` restores on resume. The records go
        back in separately: a run has already written them out."""
        arrays = {name: value for name, value in (
            ("tracker", self.tracker.vectors), ("first", self.first_vectors),
            ("inference_tracker", self.inference_tracker.vectors if self.inference_tracker else None),
            ("previous", self.records[-1]["_vectors"] if self.records else None)) if value is not None}
        return arrays

    def load_state(self, records: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
        self.records = [dict(r) for r in records]
        if self.records and "previous" in arrays:
            self.records[-1]["_vectors"] = arrays["previous"]
        self.first_vectors = arrays.get("first")
        self.tracker.load_state({"vectors": arrays["tracker"]} if "tracker" in arrays else {})
        if self.inference_tracker is not None and "inference_tracker" in arrays:
            self.inference_tracker.load_state({"vectors": arrays["inference_tracker"]})
        self.latest_logs = self._as_logs(self.records[-1]) if self.records else {}

    def public_records(self) -> list[dict[str, Any]]:
        """Records without the in-memory eigenvectors."""
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.records]

    # --------------------------------------------------------------- private
    def _maybe_measure(self, logs) -> None:
        step = int(self.model.optimizer.iterations.numpy()) if getattr(self.model, "optimizer", None) else 0
        if step % self.every or (self.records and self.records[-1]["step"] == step):
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return  # a diverged run has no curvature to measure
        if not np.all(np.isfinite(self.oracle.weights())):
            return
        self.measure(step)

    def _as_logs(self, record: dict[str, Any]) -> dict[str, float]:
        logs = {"curvature_step": float(record["step"]), "lambda_max": record["lambda_max"]}
        logs.update({f"lambda_{i + 1}": e for i, e in enumerate(record["eigenvalues"][:self.top_k]) if i})
        logs["eig_converged"] = float(record["converged"])
        for key in ("threshold", "sharpness_ratio", "eig_residual", "eig_hvps",
                    "similarity_prev", "similarity_first", "cosine_first", "lambda_max_inference", "num_above",
                    "top_k"):
            if record.get(key) is not None:
                logs[key] = float(record[key])
        logs.update({f"lambda_max/{layer}": value for layer, value in record.get("layer_lambda_max", {}).items()})
        return logs
