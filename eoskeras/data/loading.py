"""Load a DataSpec into in-memory numpy arrays ready for full-batch training.

The embedded ``mnist5k`` needs only numpy (no TensorFlow import); the tfds
data sets import tensorflow-datasets on first use. Both sources hand over
uint8 images in data set order and go through the same selection,
preprocessing and label encoding below.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoskeras.data.catalog import DATASETS, DatasetInfo
from eoskeras.data.spec import DataSpec


@dataclass(frozen=True, eq=False)
class DataBundle:
    """Arrays for training and evaluation, and a record of how they were made.

    ``x_*`` are floating arrays of shape ``(n, *input_shape)``; ``y_*`` are int32
    class indices ``(n,)`` or one-hot rows ``(n, num_classes)`` in the input
    dtype. ``record`` is a small JSON-ready dict for run records.

    Example:

    ```python
    bundle = load_data(DataSpec("mnist5k", train_size=1000))
    model.fit(bundle.x_train, bundle.y_train, batch_size=len(bundle.x_train))
    ```
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    spec: DataSpec
    record: dict[str, Any]


def load_data(spec: DataSpec | None = None) -> DataBundle:
    """Load the examples ``spec`` describes (default: all of mnist5k, standardised).

    Raises ``DataUnavailableError`` (with the remedy in its message) when a tfds
    data set is neither on disk nor downloadable, and ``ValueError`` when the
    data set holds fewer examples than asked for.

    Example:

    ```python
    from eoskeras.data import DataSpec, load_data
    bundle = load_data(DataSpec("cifar10", train_size=5120, test_size=2000))
    print(bundle.x_train.shape, bundle.record["mean"])
    ```
    """
    spec = spec or DataSpec()
    info = DATASETS[spec.dataset]
    x_train, y_train = _select(spec, info, "train", spec.train_size)
    x_test, y_test = _select(spec, info, "test", spec.test_size)
    mean, std = _constants(spec, info, x_train)
    dtype = np.dtype(spec.dtype)
    x_train, x_test = (_preprocess(x, mean, std, dtype, spec.flatten) for x in (x_train, x_test))
    record = {
        "dataset": spec.dataset,
        "source": _source(info).describe(spec),
        "train_size": len(y_train),
        "test_size": len(y_test),
        "subset": spec.subset,
        "train_class_counts": np.bincount(y_train, minlength=info.num_classes).tolist(),
        "preprocessing": spec.preprocessing,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "flatten": spec.flatten,
        "labels": spec.labels,
        "dtype": spec.dtype,
    }
    return DataBundle(
        x_train=x_train, y_train=_encode(y_train, spec, info), x_test=x_test,
        y_test=_encode(y_test, spec, info), num_classes=info.num_classes,
        input_shape=x_train.shape[1:], spec=spec, record=record)


def check_available(spec: DataSpec) -> None:
    """Raise ``DataUnavailableError`` (with the remedy) at once when ``spec``'s data
    set is not on disk and may not be downloaded.

    Imports no TensorFlow, so a command can refuse in about a second instead
    of after the TensorFlow import. A download, when allowed, is left to
    ``load_data``.

    Example: ``check_available(DataSpec("cifar10", data_dir="/data/tfds"))``.
    """
    info = DATASETS[spec.dataset]
    if info.source == "tfds" and not spec.download:
        _source(info).check_prepared(spec)


def _source(info: DatasetInfo) -> Any:
    # Imported on demand: the tfds module pulls in TensorFlow (~3 s).
    module = "embedded" if info.source == "embedded" else "tfds_source"
    return importlib.import_module(f"eoskeras.data.{module}")


def _select(spec: DataSpec, info: DatasetInfo, split: str,
            size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The split's first ``size`` examples, or its class-balanced subset, in data set order."""
    field = f"{split}_size"
    if size is None or spec.subset == "first":
        x, y = _concat(_source(info).iter_batches(spec, split, size))
        if size is not None and len(y) < size:
            raise ValueError(f"DataSpec.{field}: {size} examples asked for, but the "
                             f"{spec.dataset} {split} split provided only {len(y)}")
        return x, y
    return _balanced(_source(info).iter_batches(spec, split, None), size // info.num_classes,
                     info.num_classes, f"DataSpec.{field}: {spec.dataset} {split}")


def _balanced(batches: Iterable[tuple[np.ndarray, np.ndarray]], per_class: int,
              num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` examples of each class, kept in stream order.

    Stops reading as soon as every class is full, so a small balanced subset of
    a large data set reads only its beginning.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    for x, y in batches:
        take = np.concatenate([np.flatnonzero(y == c)[:per_class - counts[c]]
                               for c in range(num_classes)])
        take.sort()
        counts += np.bincount(y[take], minlength=num_classes)
        kept.append((x[take], y[take]))
        if (counts == per_class).all():
            return _concat(kept)
    short = {c: int(n) for c, n in enumerate(counts) if n < per_class}
    raise ValueError(f"{where} has too few examples for {per_class} per class "
                     f"(class: examples found): {short}")


def _concat(batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(batches)
    if not pairs:
        raise ValueError("the data source yielded no examples")
    xs, ys = zip(*pairs)
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def _constants(spec: DataSpec, info: DatasetInfo,
               x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) on [0, 1] pixels; (0, 1) means scaling only."""
    channels = x_train.shape[-1]
    if spec.preprocessing == "scale01":
        return np.zeros(channels), np.ones(channels)
    if spec.preprocessing == "standardize":
        return np.asarray(info.mean, dtype=np.float64), np.asarray(info.std, dtype=np.float64)
    pixels = x_train.reshape(-1, channels).astype(np.float64) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


def _preprocess(x: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype: np.dtype,
                flatten: bool) -> np.ndarray:
    # Computed in float64 and rounded once, so float32 and float64 runs start
    # from the same numbers up to float32 rounding.
    out = ((x.astype(np.float64) / 255.0 - mean) / std).astype(dtype)
    return out.reshape(len(out), -1) if flatten else out


def _encode(y: np.ndarray, spec: DataSpec, info: DatasetInfo) -> np.ndarray:
    if spec.labels == "onehot":
        return np.eye(info.num_classes, dtype=spec.dtype)[y]
    return y.astype(np.int32)
