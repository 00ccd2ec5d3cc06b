"""eoskeras against PyHessian (PyTorch, CPU) on the same network, weights and data, in one run.

Run: ``pip install -e ".[bench]"`` then ``python benchmarks/peer_pyhessian.py``
(2.9–3.7 minutes on 2 CPU cores in seven timed runs on 2026-12-01 and 02). Not part of the test suite.

The setup: the 784-200-200-10 tanh MLP, MSE (0.5·‖f(x) − onehot(y)‖², mean over
examples), the 4,000 embedded training digits, float32, the same weights in
Keras and PyTorch; measured at initialisation and after 200 full-batch GD steps
(η = 1/λ₀, trained in Keras and copied over).

- λ_max to tol 1e-3: eoskeras's Lanczos against PyHessian's power iteration
  (relative change < tol), each from its own seeded random start; both errors
  against a float64 eoskeras Lanczos to 1e-10. eoskeras runs twice: with tol
  on the residual (‖Hv − θv‖ ≤ tol·|θ|, the default) and on the eigenvalue
  (residual²/gap ≤ tol·|θ|, ``criterion="eigenvalue"``), each also with a
  subset start (``start_examples=START_EXAMPLES``: a first solve on that many
  of the examples, whose Ritz vector starts the full one; its HVPs are
  reported apart, each costing about START_EXAMPLES / 4,000 of a full one).
- Trace, Hutchinson at equal HVPs (``TRACE_HVPS`` Rademacher vectors each):
  PyHessian forms H v and dots it with v; eoskeras carries the second
  derivative along v forward through the loss's ops (``curvature/taylor.py``;
  the table's title line says which way it took). Error from arithmetic: each library's float32 estimate against its own
  estimator on the same vectors in float64; the sampling error (stderr) is
  the same estimator's in both.
- "fresh": the time includes building the oracle / ``hessian`` object (and,
  for eoskeras, tracing its tf.functions); "reused": an already built one.
- eoskeras's λ_max holds the forward pass and gradient across its Lanczos
  steps in one graph call (as PyHessian holds its autograd graph); the
  ``hold=False`` rows drive each step from the host with a fresh HVP.
- Both take the 4,000 examples as one batch (eoskeras: one micro-batch), as
  PyHessian's ``data=`` mode does.
- A reference trace: Hutch++ in float64 with ``REFERENCE_TRACE_HVPS`` HVPs,
  to judge both Hutchinson estimates.

Times are medians over ``REPEATS`` interleaved repeats; ratios eoskeras / PyHessian.
A first table times the products an HVP of this MLP is made of, alone, in
TensorFlow and in PyTorch: the floor each library's HVP stands on.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets TF_CPP_MIN_LOG_LEVEL before TensorFlow loads)
import gc
import statistics
import sys
import time
from typing import Callable

import keras
import numpy as np
import pyhessian
import torch

import eoskeras
from _common import machine, print_table

TOL = 1e-3
CRITERIA = ("residual", "eigenvalue")  # what eoskeras's tol bounds (lanczos's criterion)
START_EXAMPLES = 500  # a subset start's examples (of 4,000)
REPEATS = 3
TRACE_HVPS = 40
REFERENCE_TRACE_HVPS = 300
GD_STEPS = 200


def keras_mlp(input_shape) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(200, activation="tanh"), keras.layers.Dense(200, activation="tanh"),
                             keras.layers.Dense(10)])


def torch_copy(net: keras.Model, dtype=torch.float32) -> torch.nn.Module:
    """The Keras MLP's weights in an equivalent PyTorch module (kernels transposed)."""
    dense = [layer for layer in net.layers if isinstance(layer, keras.layers.Dense)]
    modules: list[torch.nn.Module] = [torch.nn.Flatten()]
    for i, layer in enumerate(dense):
        kernel, bias = (w.numpy() for w in layer.weights)
        linear = torch.nn.Linear(*kernel.shape).to(dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(kernel.T))
            linear.bias.copy_(torch.tensor(bias))
        modules += [linear] + ([torch.nn.Tanh()] if i < len(dense) - 1 else [])
    return torch.nn.Sequential(*modules)


def half_squared_error(outputs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((outputs - onehot) ** 2).sum(dim=1).mean()


class CountingHVPs:
    """Counts PyHessian's HVPs by wrapping the function its solvers call."""

    def __init__(self) -> None:
        # pyhessian/__init__ rebinds the name ``pyhessian.hessian`` to the class: go through sys.modules.
        module = sys.modules["pyhessian.hessian"]
        self.count, self._original = 0, module.hessian_vector_product

        def counted(*args, **kwargs):
            self.count += 1
            return self._original(*args, **kwargs)

        module.hessian_vector_product = counted


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    # Collect earlier repeats' garbage first (both libraries' graphs and tapes hold reference
    # cycles): otherwise a collection lands in whichever call runs then (timeit does the same).
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def median(values: list[float]) -> float:
    return statistics.median(values)


def compare(net: keras.Model, x: np.ndarray, y: np.ndarray, counter: CountingHVPs,
            label: str) -> tuple[list[list[object]], float]:
    def oracle(dtype: str = "float32") -> eoskeras.HessianOracle:
        return eoskeras.HessianOracle(net, "mse", x, y, dtype=dtype, micro_batch_size=len(x))

    reference = oracle("float64")
    ref_spectrum = eoskeras.lanczos(reference, k=1, tol=1e-10, seed=0)
    lam_ref = ref_spectrum.lambda_max
    xt = torch.tensor(x.reshape(len(x), -1))
    onehot = torch.nn.functional.one_hot(torch.tensor(y, dtype=torch.long), 10).float()
    model = torch_copy(net)

    def peer_object():
        return pyhessian.hessian(model, half_squared_error, data=(xt, onehot), cuda=False)

    def peer_lambda(peer, seed):
        torch.manual_seed(seed)
        return peer.eigenvalues(maxIter=100, tol=TOL, top_n=1)[0][0]

    def peer_trace(peer, seed):
        torch.manual_seed(seed)
        return np.asarray(peer.trace(maxIter=TRACE_HVPS, tol=0.0))  # tol 0: exactly TRACE_HVPS HVPs

    ours_reused = oracle()
    ours_reused.hvp(np.ones(ours_reused.dim))  # trace once
    ours_reused.hvp_block(np.ones((ours_reused.dim, 2)))
    ours_reused.quadratic_forms(np.ones((ours_reused.dim, 2)))
    peer_reused = peer_object()
    variants = {f"{c}{'_sub' if m else ''}": (c, m) for c in CRITERIA for m in (None, START_EXAMPLES)}
    t: dict[str, list[float]] = {k: [] for k in ("peer_fresh", "peer", "ours_tr_fresh", "ours_tr", "peer_tr_fresh",
                                                 "peer_tr", *(f"{v}{w}" for v in variants for w in ("_fresh", "")),
                                                 *(f"{c}_host" for c in CRITERIA))}
    err_peer, hvps_peer = [], []
    err_ours: dict[str, list[float]] = {v: [] for v in variants}
    hvps_ours: dict[str, list[int]] = {v: [] for v in variants}
    subset_hvps: dict[str, list[int]] = {v: [] for v in variants}
    for seed in range(REPEATS):
        for variant, (criterion, examples) in variants.items():
            def solve(op, **options):
                return eoskeras.lanczos(op, k=1, tol=TOL, seed=seed, criterion=criterion, start_examples=examples,
                                        **options)
            s, spectrum = timed(lambda: solve(oracle()))
            t[f"{variant}_fresh"].append(s)
            s, spectrum = timed(lambda: solve(ours_reused))
            t[variant].append(s)
            err_ours[variant].append(abs(spectrum.lambda_max - lam_ref) / lam_ref)
            hvps_ours[variant].append(spectrum.num_hvps)
            subset_hvps[variant].append(spectrum.info.get("start_hvps", 0))
            if examples is None:
                s, _ = timed(lambda: eoskeras.lanczos(ours_reused, k=1, tol=TOL, seed=seed, criterion=criterion,
                                                      hold=False))
                t[f"{criterion}_host"].append(s)
        s, _ = timed(lambda: peer_lambda(peer_object(), seed))
        t["peer_fresh"].append(s)
        before = counter.count
        s, lam = timed(lambda: peer_lambda(peer_reused, seed))
        t["peer"].append(s)
        hvps_peer.append(counter.count - before)
        err_peer.append(abs(lam - lam_ref) / lam_ref)
        s, _ = timed(lambda: eoskeras.hutchinson_trace(oracle(), TRACE_HVPS, seed=seed))
        t["ours_tr_fresh"].append(s)
        s, ours_trace = timed(lambda: eoskeras.hutchinson_trace(ours_reused, TRACE_HVPS, seed=seed))
        t["ours_tr"].append(s)
        s, _ = timed(lambda: peer_trace(peer_object(), seed))
        t["peer_tr_fresh"].append(s)
        s, peer_samples = timed(lambda: peer_trace(peer_reused, seed))
        t["peer_tr"].append(s)

    # Trace errors from arithmetic: the same estimator on the same vectors in float64 (last seed).
    ours64 = eoskeras.hutchinson_trace(reference, TRACE_HVPS, seed=REPEATS - 1).value
    model.double()
    peer64 = pyhessian.hessian(model, half_squared_error, data=(xt.double(), onehot.double()), cuda=False)
    torch.manual_seed(REPEATS - 1)
    peer64_value = float(np.mean(peer64.trace(maxIter=TRACE_HVPS, tol=0.0)))
    peer_value = float(peer_samples.mean())
    peer_stderr = float(peer_samples.std(ddof=1) / np.sqrt(len(peer_samples)))

    trace_ref = eoskeras.hutchpp_trace(reference, REFERENCE_TRACE_HVPS, seed=0)
    m = {k: median(v) for k, v in t.items()}
    print(f"{label}: eoskeras's quadratic forms: {ours_reused.forms_method}")
    print(f"{label}: lambda_max (float64, converged: {ref_spectrum.converged}) = {lam_ref:.6f}; trace (Hutch++, float64, {REFERENCE_TRACE_HVPS} HVPs) "
          f"{trace_ref.value:.1f} ± {trace_ref.stderr:.1f}; Hutchinson ({TRACE_HVPS} HVPs): eoskeras "
          f"{ours_trace.value:.1f} ± {ours_trace.stderr:.1f}, PyHessian {peer_value:.1f} ± {peer_stderr:.1f}")
    lambda_rows = []
    for v, (c, examples) in variants.items():
        name = f"λ_max, tol on the {c}" + (f", subset start ({examples})" if examples else "")
        lambda_rows += [
            [label, f"{name}: s, fresh", m[f"{v}_fresh"], m["peer_fresh"], m[f"{v}_fresh"] / m["peer_fresh"]],
            [label, f"{name}: s, reused", m[v], m["peer"], m[v] / m["peer"]],
            *([[label, f"{name}: s, reused, hold=False", m[f"{c}_host"], m["peer"], m[f"{c}_host"] / m["peer"]]]
              if not examples else []),
            [label, f"{name}: HVPs (median)", median(hvps_ours[v]), median(hvps_peer),
             median(hvps_ours[v]) / median(hvps_peer)],
            *([[label, f"{name}: the subset's HVPs (median)", median(subset_hvps[v]), "", ""]] if examples else []),
            [label, f"{name}: rel. error vs float64 (max)", f"{max(err_ours[v]):.1e}", f"{max(err_peer):.1e}", ""],
        ]
    return [
        *lambda_rows,
        [label, f"trace s, {TRACE_HVPS} HVPs, fresh", m["ours_tr_fresh"], m["peer_tr_fresh"],
         m["ours_tr_fresh"] / m["peer_tr_fresh"]],
        [label, f"trace s, {TRACE_HVPS} HVPs, reused", m["ours_tr"], m["peer_tr"], m["ours_tr"] / m["peer_tr"]],
        [label, "trace rel. error vs float64, same vectors", f"{abs(ours_trace.value - ours64) / abs(ours64):.1e}",
         f"{abs(peer_value - peer64_value) / abs(peer64_value):.1e}", ""],
        [label, "trace stderr / trace", f"{ours_trace.stderr / abs(ours_trace.value):.1e}",
         f"{peer_stderr / abs(peer_value):.1e}", ""],
    ], lam_ref


def kernels(x: np.ndarray, repeats: int = 20) -> list[list[object]]:
    """The MLP's products with the input and the 200 × 200 layer alone, in
    TensorFlow (``repeats`` of them in one graph call, so no call overhead)
    and in PyTorch: what an HVP is built of, so what bounds its time in each."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = x.reshape(len(x), -1).astype(np.float32)
    wide, square = (rng.standard_normal(shape).astype(np.float32) for shape in ((len(a), 200), (200, 200)))
    products = {
        "X W₁ (4000×784 · 784×200)": (a, rng.standard_normal((a.shape[1], 200)).astype(np.float32), False),
        "Xᵀ D (784×4000 · 4000×200)": (a, wide, True),
        "A W₂ (4000×200 · 200×200)": (wide, square, False),
    }
    rows = []
    for name, (left, right, transpose) in products.items():
        tl, tr, pl, pr = tf.constant(left), tf.constant(right), torch.from_numpy(left), torch.from_numpy(right)

        @tf.function
        def ours(tl=tl, tr=tr, transpose=transpose):
            # Each product depends on the last (a scalar from it scales the next), so none is skipped.
            def body(i, scale):
                return i + 1, tf.reduce_mean(tf.matmul(tl, tr * scale, transpose_a=transpose)) * 0.0 + 1.0
            return tf.while_loop(lambda i, _: i < repeats, body, (0, tf.constant(1.0)))[1]

        def theirs(pl=pl, pr=pr, transpose=transpose):
            scale = torch.tensor(1.0)
            for _ in range(repeats):
                scale = (pl.T if transpose else pl).matmul(pr * scale).mean() * 0.0 + 1.0
            return float(scale)

        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        for _ in range(2):
            float(ours()), theirs()  # warm-up and tracing
        for _ in range(5):  # interleaved
            times["ours"].append(timed(lambda: float(ours()))[0] / repeats)
            times["theirs"].append(timed(theirs)[0] / repeats)
        ms = {k: 1e3 * median(v) for k, v in times.items()}
        rows.append(["kernels", f"{name}, ms", ms["ours"], ms["theirs"], ms["ours"] / ms["theirs"]])
    return rows


def main() -> None:
    print(machine(), f"| torch {torch.__version__} ({torch.get_num_threads()} threads)")
    bundle = eoskeras.load_data(eoskeras.DataSpec("mnist5k"))
    x, y = bundle.x_train, bundle.y_train
    net = keras_mlp(x.shape[1:])
    counter = CountingHVPs()
    header = ["state", "quantity", "eoskeras", "PyHessian", "eoskeras / PyHessian"]
    title = f"eoskeras vs PyHessian: 784-200-200-10 tanh MLP, MSE, {len(x)} digits, float32, tol {TOL}"
    print_table("TensorFlow's and PyTorch's products on the MLP's shapes (ms each, medians of 5 interleaved)",
                ["", "product", "TensorFlow", "PyTorch", "TensorFlow / PyTorch"], kernels(x))
    rows, lam0 = compare(net, x, y, counter, "init")
    print_table(title, header, rows)  # as soon as it is measured: the second state takes longer
    model = eoskeras.FullBatchModel(net, loss="mse")
    model.compile(optimizer=keras.optimizers.SGD(1.0 / lam0))
    model.fit_full_batch(x, y, steps=GD_STEPS)
    print_table(f"{title} (GD eta = 1/lambda_0 = {1 / lam0:.4g})", header,
                compare(net, x, y, counter, f"after {GD_STEPS} GD steps")[0])


if __name__ == "__main__":
    main()
