"""Every ```python example in README.md and in the docstrings under eoskeras/
and cli/ runs against the current API, so a renamed function or argument
fails here. Each block runs in a fresh namespace: its module's names plus
whichever of the tiny objects below it mentions (64 embedded digits, a
network of about 900 weights), in a temporary working directory that holds
``recipes/`` and the synthetic run and sweep directories of test_reports.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import re
import textwrap
import types
from pathlib import Path
from typing import Any, Callable

import keras
import matplotlib
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import eoskeras
from test_reports import make_completed_run, make_sweep

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^[ \t]*```python\n(.*?)^[ \t]*```", re.S | re.M)


def _sources() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "eoskeras").rglob("*.py")), *sorted((ROOT / "cli").rglob("*.py"))]


def _blocks() -> list[Any]:
    found = []
    for path in _sources():
        for i, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
            name = f"{path.relative_to(ROOT)}#{i}"
            found.append(pytest.param(path, textwrap.dedent(match.group(1)), id=name))
    # A run_recipe leaves process state behind that changes a later plain model.fit in the
    # same process (a known, separate problem): the examples that train a whole run go last.
    return sorted(found, key=lambda p: "run_recipe(" in p.values[1])


def _names(path: Path) -> dict[str, Any]:
    """What an example may use without importing it: eoskeras's public API and,
    in a docstring, its module's and its package's names."""
    names = {name: getattr(eoskeras, name) for name in eoskeras.__all__}
    if path.suffix == ".py":
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = ("eoskeras", *parts) if parts[0] == "cli" else parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for name in filter(None, (module.rpartition(".")[0], module)):
            # Submodules are no example's objects: ``lanczos`` is the function, ``oracle`` the fixture.
            names.update({k: v for k, v in vars(importlib.import_module(name)).items()
                          if not isinstance(v, types.ModuleType)})
    return names


@functools.cache
def _digits() -> tuple[np.ndarray, ...]:
    bundle = eoskeras.load_data(eoskeras.DataSpec("mnist5k", train_size=64, test_size=32))
    return bundle.x_train, bundle.y_train, bundle.x_test, bundle.y_test


def _network() -> keras.Model:
    # The layer names the examples select: conv.*, dense, dense_1.
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(2, 3, strides=4, activation="tanh", name="conv2d")(inputs)
    h = keras.layers.Dense(8, activation="tanh", name="dense")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10, name="dense_1")(h))


def _model(ns: dict[str, Any], code: str) -> keras.Model:
    """A compiled network, wrapped in a FullBatchModel where the example trains with ``fit_full_batch``."""
    network = _network()
    if "model.fit_full_batch" in code:
        model = eoskeras.FullBatchModel(network, loss="cross_entropy", physical_batch_size=64)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        return model
    network.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return network


def _float64(build: Callable[[], keras.Model]) -> keras.Model:
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(policy)


def _unit(n: int) -> np.ndarray:
    return np.ones(n) / np.sqrt(n)


# Objects the examples refer to, built only when a block names them.
FIXTURES: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "x_train": lambda ns, code: _digits()[0],
    "y_train": lambda ns, code: _digits()[1],
    "x_test": lambda ns, code: _digits()[2],
    "y_test": lambda ns, code: _digits()[3],
    "x": lambda ns, code: _digits()[0],
    "y": lambda ns, code: _digits()[1],
    "model": _model,
    "net": lambda ns, code: _float64(_network),  # verify.py: finite differences need float64
    "oracle": lambda ns, code: eoskeras.HessianOracle(get(ns, code, "model"), "cross_entropy", *_digits()[:2]),
    "optimizer": lambda ns, code: get(ns, code, "model").optimizer,
    "monitor": lambda ns, code: eoskeras.SharpnessMonitor(*_digits()[:2], every=100, top_k=1),
    "top_vector": lambda ns, code: _unit(get(ns, code, "net").count_params()),
    "spec_start": lambda ns, code: eoskeras.lanczos(get(ns, code, "oracle"), k=2, seed=0),
    "spec_end": lambda ns, code: eoskeras.lanczos(get(ns, code, "oracle"), k=2, seed=1),
    "steps": lambda ns, code: 2,
    "y_true": lambda ns, code: tf.constant(_digits()[1][:4]),
    "logits": lambda ns, code: tf.random.stateless_normal((4, 10), seed=(0, 0)),
    "run_dir": lambda ns, code: Path("run_dir").resolve(),
}


def get(ns: dict[str, Any], code: str, name: str) -> Any:
    if name not in ns:
        ns[name] = FIXTURES[name](ns, code)
    return ns[name]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``recipes/``, ``runs/cifar10-gd`` and ``runs/cifar10-sweep``, as the examples name them."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    (tmp_path / "runs").mkdir()
    make_completed_run(tmp_path / "runs/cifar10-gd")
    make_sweep(tmp_path / "runs/cifar10-sweep")
    (tmp_path / "run_dir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("path", "code"), _blocks())
def test_example_runs(path: Path, code: str, workdir: Path) -> None:
    ns: dict[str, Any] = {**_names(path), "eoskeras": eoskeras, "keras": keras, "np": np, "tf": tf,
                          "plt": plt, "json": __import__("json"), "Path": Path}
    for name in FIXTURES:
        if re.search(rf"\b{name}\b", code):
            get(ns, code, name)
    keras.utils.set_random_seed(0)
    # CIFAR-10 is not on disk here: tfds's mock images of its shapes stand in.
    try:
        with tfds.testing.mock_data(num_examples=5120) if "cifar10" in code else contextlib.nullcontext():
            exec(compile(code, str(path), "exec"), ns)
    finally:
        plt.close("all")  # an example's figures are its own: later tests check that plots close theirs


def test_every_source_with_examples_is_collected() -> None:
    assert len(_blocks()) >= 40  # README's and the docstrings' ``python`` blocks
