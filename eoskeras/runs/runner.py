"""Run a validated recipe: data, model, learning rate, callbacks, run directory.

This module wires the library's layers together and holds no maths.

Example:

```python
from eoskeras.recipes import load_recipe
from eoskeras.runs.runner import run_recipe
result = run_recipe(load_recipe("recipes/quickstart.yaml", ["training.max_steps=10"]), out_dir="runs/quickstart")
result["status"], result["flatness"]["lambda_max"]
```
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from eoskeras.curvature.lanczos import lanczos
from eoskeras.curvature.oracle import HessianOracle
from eoskeras.data import DataSpec, load_data
from eoskeras.models import build_model
from eoskeras.models.inspection import has_batch_norm
from eoskeras.recipes import Recipe, RecipeError, dump_recipe
from eoskeras.recipes.resolve import train_chunk_size
from eoskeras.recipes.schema import optimizer_arguments
from eoskeras.runs import layout, rundir
from eoskeras.runs.checkpoint import Checkpointer, read_record
from eoskeras.runs.environment import environment_record
from eoskeras.runs.files import atomic_save_npz, atomic_write_json, atomic_write_text
from eoskeras.runs.recorder import RunRecorder
from eoskeras.runs.strategy import is_chief, make_strategy
from eoskeras.training.flatness_report import FlatnessReport
from eoskeras.training.full_batch import FullBatchModel, check_ghost_batches
from eoskeras.training.measured import lr_rule_operator
from eoskeras.training.monitor import SharpnessMonitor
from eoskeras.training.optimizers import make_optimizer
from eoskeras.training.stopping import StopConditions
from eoskeras.training.thresholds import is_adaptive, stability_threshold, threshold_learning_rate

ProgressFactory = Callable[[int, int], keras.callbacks.Callback]


@dataclass
class Prepared:
    """Everything built from a recipe before training starts.

    ``oracle`` is the loss the train step optimises (BatchNorm with the batch
    statistics of the train step's own chunks), restricted to the Hessian's
    examples: the monitor and the final flatness measure it. ``trained`` is
    that loss over every training example, which ``lr_relative`` is resolved
    on (the same object when the Hessian uses every example). ``inference``
    is the same data with BatchNorm's moving statistics, for networks with
    BatchNorm only: the paper's convention, recorded apart and never compared
    with the threshold.
    """

    recipe: Recipe
    data: Any
    network: keras.Model
    model: FullBatchModel
    hessian: tuple[np.ndarray, np.ndarray]
    strategy: tf.distribute.Strategy
    oracle: HessianOracle
    trained: HessianOracle
    inference: HessianOracle | None


def _data(recipe: Recipe):
    d = recipe.data
    return load_data(DataSpec(dataset=d.dataset, train_size=d.train_size, test_size=d.test_size, subset=d.subset,
                              preprocessing=d.preprocessing, flatten=d.flatten, labels=d.labels, dtype=d.dtype,
                              data_dir=d.data_dir, download=d.download))


def recipe_optimizer(recipe: Recipe, lr: float) -> keras.optimizers.Optimizer:
    """The recipe's optimiser at step size ``lr``, with its warm-up."""
    o = recipe.optimizer
    return make_optimizer(o.name, lr, warmup_steps=o.warmup_steps, **optimizer_arguments(o))


def prepare(recipe: Recipe) -> Prepared:
    """Data, and the model built in the recipe's strategy scope."""
    keras.utils.set_random_seed(recipe.seed)
    data = _data(recipe)
    strategy = make_strategy(recipe.strategy)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(recipe.data.dtype)  # the model computes in the data's dtype
    try:
        with strategy.scope():
            network = build_model(recipe.model.name, data.input_shape, data.num_classes, seed=recipe.seed,
                                  **dict(recipe.model.options))
            model = FullBatchModel(network, loss=recipe.loss, physical_batch_size=recipe.training.physical_batch_size)
    finally:
        keras.config.set_dtype_policy(policy)
    check_ghost_batches(network, min(recipe.training.batch_size or len(data.x_train), len(data.x_train)),
                        strategy.num_replicas_in_sync, recipe.training.physical_batch_size)
    c = recipe.curvature
    batch_norm = has_batch_norm(network)
    if batch_norm:
        _check_hessian_chunks(recipe)
    hessian = (data.x_train[:c.hessian_size], data.y_train[:c.hessian_size])

    def oracle_over(x, y, bn_mode: str = "batch") -> HessianOracle:
        return HessianOracle(network, recipe.loss, x, y, micro_batch_size=c.micro_batch_size, bn_mode=bn_mode,
                             dtype=c.dtype, hvp_mode=c.hvp_mode, strategy=strategy)

    oracle = oracle_over(*hessian)
    trained = oracle if c.hessian_size == len(data.x_train) else oracle_over(data.x_train, data.y_train)
    inference = oracle_over(*hessian, bn_mode="inference") if batch_norm else None
    return Prepared(recipe, data, network, model, hessian, strategy, oracle, trained, inference)


def _check_hessian_chunks(recipe: Recipe) -> None:
    """With BatchNorm, grouping examples differently changes the loss itself:
    the Hessian must group them as the train step does."""
    c, chunk = recipe.curvature, train_chunk_size(recipe.training)
    if c.micro_batch_size != chunk:
        raise RecipeError("curvature.micro_batch_size", c.micro_batch_size,
                          f"null or {chunk} (the train step's chunks) for a network with BatchNorm",
                          "BatchNorm statistics over other chunks make another loss than the one trained")
    if c.hessian_size != recipe.data.train_size and c.hessian_size % chunk:
        raise RecipeError("curvature.hessian_size", c.hessian_size,
                          f"data.train_size or a multiple of {chunk} (the train step's chunks) for a network "
                          "with BatchNorm", "its last chunk would have other BatchNorm statistics than training")


def resolve_learning_rate(p: Prepared) -> dict[str, Any]:
    """The absolute step size, and the initial sharpness it was resolved from.

    The sharpness is always that of the loss the train step optimises (every
    training example, BatchNorm statistics of the train step's chunks), so
    ``lr_relative`` is the multiple of the threshold that training really
    faces. For adaptive optimisers it is the preconditioned sharpness, with
    the preconditioner of ``lr_rule_operator`` (the rule is recorded as
    ``lr_rule``). Networks with BatchNorm also record the inference-mode
    sharpness (moving statistics), for comparison only.
    """
    o = p.recipe.optimizer
    probe = recipe_optimizer(p.recipe, o.lr or 1.0)

    def initial_sharpness(oracle: HessianOracle):
        op, rule = lr_rule_operator(oracle, probe)
        return lanczos(op, k=1, tol=1e-4, seed=p.recipe.seed), rule

    spectrum, rule = initial_sharpness(p.trained)
    sharpness = spectrum.lambda_max
    lr = o.lr if o.lr is not None else o.lr_relative * threshold_learning_rate(
        o.name, sharpness, **optimizer_arguments(o))
    record = {"lr": float(lr), "lr_relative": o.lr_relative, "initial_sharpness": sharpness,
              "initial_sharpness_preconditioned": is_adaptive(probe), "initial_sharpness_hvps": spectrum.num_hvps,
              "initial_sharpness_converged": spectrum.converged, "initial_sharpness_mode": p.trained.describe(),
              "lr_rule": rule}
    if p.inference is not None:
        inference, _ = initial_sharpness(p.inference)
        record.update(initial_sharpness_inference=inference.lambda_max,
                      initial_sharpness_inference_converged=inference.converged,
                      initial_sharpness_inference_mode=p.inference.describe())
    return record


def _callbacks(p: Prepared, run_dir: Path) -> tuple[SharpnessMonitor | None, StopConditions, FlatnessReport | None]:
    r = p.recipe
    c, s, f = r.curvature, r.training.stop, r.flatness
    monitor = None
    if c.enabled:
        monitor = SharpnessMonitor(*p.hessian, loss=r.loss, every=c.every, top_k=c.top_k, tol=c.tol,
                                   criterion=c.criterion, seed=r.seed,
                                   max_hvps=c.max_hvps, oracle=p.oracle, auto_k=c.auto_k,
                                   inference_oracle=p.inference if c.also_inference else None,
                                   carry_forward=False)  # the recorder and display keep the latest values
    stop = StopConditions(train_accuracy=s.train_accuracy, patience=s.patience, loss_below=s.loss_below,
                          max_steps=r.training.max_steps, divergence_factor=s.divergence_factor,
                          stall_accuracy=s.stall_accuracy, stall_window=s.stall_window)
    flatness = None
    if f.enabled:
        flatness = FlatnessReport(*p.hessian, p.data.x_test, p.data.y_test, loss=r.loss, top_k=c.top_k,
                                  trace_hvps=f.trace_samples, rho=f.rho, noise_sigma=f.noise_sigma,
                                  noise_samples=f.noise_samples,
                                  density_steps=f.density_lanczos_steps if f.density else 0, seed=r.seed,
                                  oracle=p.oracle)
    return monitor, stop, flatness


def _train_data(p: Prepared, start_step: int) -> tf.data.Dataset:
    """One element per optimiser step: the full batch, or SGD's mini-batch of
    that step (a fixed per-epoch permutation from the seed, so a resumed run
    sees the same batches)."""
    x, y = p.data.x_train, p.data.y_train
    batch = p.recipe.training.batch_size
    if batch is None or batch >= len(x):
        return tf.data.Dataset.from_tensors((x, y)).repeat()
    per_epoch = len(x) // batch
    steps = p.recipe.training.max_steps
    epochs = [np.random.default_rng([p.recipe.seed, e]).permutation(len(x))[: per_epoch * batch]
              for e in range(start_step // per_epoch, math.ceil(steps / per_epoch) + 1)]
    order = np.concatenate(epochs).reshape(-1, batch)[start_step % per_epoch:]
    xs, ys = tf.constant(x), tf.constant(y)
    return tf.data.Dataset.from_tensor_slices(order).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i)))


def _convergence_counts(monitor: SharpnessMonitor | None) -> dict[str, int]:
    records = monitor.records if monitor is not None else []
    return {"curvature_measurements": len(records),
            "curvature_unconverged": sum(not r.get("converged", True) for r in records)}


def run_recipe(recipe: Recipe, out_dir: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
               progress: ProgressFactory | None = None, checkpoint_every: int | None = None,
               deterministic: bool = True) -> dict[str, Any]:
    """Train ``recipe`` into a run directory and return its ``result.json`` record.

    Under ``multi_worker`` every worker calls this alike; only the chief writes
    the run directory, the others train in step in a scratch directory.
    """
    run_dir = Path(out_dir or recipe.output.dir)
    if out_dir is None:
        rundir.check_inside_working_directory(run_dir, "output.dir")
    chief = is_chief(recipe.strategy)
    if chief:
        rundir.check(run_dir, resume=resume, overwrite=overwrite)
        if resume:
            rundir.check_same_recipe(run_dir, recipe)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    # Data before the directory: a run that cannot load its data leaves nothing behind.
    p = prepare(recipe)
    if not chief:
        with rundir.worker_scratch(run_dir, resume=resume) as scratch:
            return _train(p, scratch, resume=resume, progress=None, checkpoint_every=checkpoint_every,
                          deterministic=deterministic)
    rundir.prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    with rundir.locked(run_dir):
        return _train(p, run_dir, resume=resume, progress=progress, checkpoint_every=checkpoint_every,
                      deterministic=deterministic)


def _train(p: Prepared, run_dir: Path, *, resume: bool, progress: ProgressFactory | None,
           checkpoint_every: int | None, deterministic: bool) -> dict[str, Any]:
    recipe = p.recipe
    result_path = run_dir / layout.RESULT
    if resume:
        result = read_record(result_path)
    else:
        atomic_write_json(run_dir / layout.ENVIRONMENT, environment_record(
            seed=recipe.seed, strategy=recipe.strategy, replicas=p.strategy.num_replicas_in_sync,
            deterministic=deterministic))
        result = {"status": "running", "name": recipe.name, "optimizer": recipe.optimizer.name,
                  **resolve_learning_rate(p)}
        atomic_write_text(run_dir / layout.RECIPE,
                          f"# resolved learning rate: {result['lr']:.6g} "
                          f"(initial sharpness {result['initial_sharpness']:.6g})\n" + dump_recipe(recipe))
        atomic_write_json(result_path, result)
    with p.strategy.scope():
        optimizer = recipe_optimizer(recipe, result["lr"])
        p.model.compile(optimizer=optimizer)
        optimizer.build(p.network.trainable_variables)
    monitor, stop, flatness = _callbacks(p, run_dir)
    checkpointer = Checkpointer(run_dir, p.network, optimizer, monitor, stop)
    recorder = RunRecorder(run_dir, checkpointer, monitor, log_every=recipe.training.log_every,
                           checkpoint_every=checkpoint_every or max(recipe.curvature.every, 10),
                           vectors_every=recipe.curvature.vectors_every, vectors_dtype=recipe.curvature.vectors_dtype)
    start = 0
    if resume:
        start = checkpointer.restore()["step"]
        recorder.resume_from(start)
    steps = recipe.training.max_steps
    callbacks: list[keras.callbacks.Callback] = [c for c in (monitor, stop) if c is not None]
    callbacks += [recorder, keras.callbacks.TensorBoard(str(run_dir / layout.TENSORBOARD), write_graph=False)]
    display = progress(steps, start) if progress is not None else contextlib.nullcontext()
    if progress is not None:
        callbacks.append(display)
    test = (p.data.x_test, p.data.y_test)
    began = time.perf_counter()
    previous = signal.signal(signal.SIGINT, lambda *_: (recorder.request_stop(), signal.signal(signal.SIGINT, previous)))
    # Keras skips on_train_end when fit raises: the display closes as a context manager.
    try:
        with display:
            if start < steps and stop.reason is None:
                p.model.fit(_train_data(p, start), epochs=steps, initial_epoch=start, steps_per_epoch=1,
                            validation_data=tf.data.Dataset.from_tensors(test),
                            validation_freq=recipe.training.eval_test_every, callbacks=callbacks, verbose=0,
                            shuffle=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    interrupted = recorder.stop_requested
    measure_flatness = flatness is not None and not interrupted and not stop.diverged
    result.update(
        status="interrupted" if interrupted else layout.OUTCOME_STATUS[stop.outcome or "max_steps"],
        # A run resumed at max_steps does not train, so no condition fired.
        stop_reason="interrupted by the user (resume with --resume)" if interrupted else (
            stop.reason or result.get("stop_reason") or f"reached max_steps={steps}"),
        stop_step=int(optimizer.iterations.numpy()),
        wall_seconds=result.get("wall_seconds", 0.0) + time.perf_counter() - began,
        threshold=stability_threshold(optimizer),
        **_convergence_counts(monitor),
        flatness=flatness.measure(p.model) if measure_flatness else None,
    )
    if measure_flatness and flatness.density is not None:
        d = flatness.density
        atomic_save_npz(run_dir / layout.DENSITY, grid=d.grid, density=d.density, nodes=d.nodes, weights=d.weights)
    atomic_write_json(result_path, result)
    return result
