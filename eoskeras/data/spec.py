"""What to load: the data specification, validated before TensorFlow is imported.

Imports nothing heavy (not even numpy) so that a recipe's data section can be
checked in milliseconds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from eoskeras.data.catalog import DATASETS

SUBSETS: tuple[str, ...] = ("first", "balanced")
PREPROCESSING: tuple[str, ...] = ("standardize", "standardize_subset", "scale01")
LABELS: tuple[str, ...] = ("integer", "onehot")
DTYPES: tuple[str, ...] = ("float32", "float64")


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and cannot (or may not) be downloaded now.

    The message always says how to get the data.
    """


@dataclass(frozen=True)
class DataSpec:
    """Which examples to load and how to prepare them for full-batch training.

    Fields:
        dataset: a name from ``eoskeras.data.catalog.DATASETS``.
        train_size: number of training examples, or None for the whole split.
        test_size: number of test examples, or None for the whole split.
        subset: ``"first"`` takes the first N examples in the data set's order
            (Cohen et al.'s convention: cifar10-5k is the first 5,000 images);
            ``"balanced"`` takes the first N/C examples of each of the C classes,
            in data set order (N must be a multiple of C). The same rule picks
            the test subset.
        preprocessing: ``"standardize"`` scales pixels to [0, 1] and then
            standardises each channel with the catalog's constants;
            ``"standardize_subset"`` does the same with the mean and standard
            deviation of the selected training examples; ``"scale01"`` only
            scales to [0, 1].
        flatten: reshape each example to a vector (for MLPs fed raw arrays).
        labels: ``"integer"`` class indices (cross-entropy) or ``"onehot"``
            vectors (MSE), the latter in ``dtype``.
        dtype: ``"float32"`` or ``"float64"`` for the inputs.
        data_dir: where tensorflow-datasets keeps prepared data (None: its
            default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        download: allow downloading a tfds data set that is not on disk.

    Example:

    ```python
    from eoskeras.data import DataSpec, load_data
    spec = DataSpec("cifar10", train_size=5120, test_size=2000, data_dir="/data/tfds")
    bundle = load_data(spec)
    ```
    """

    dataset: str = "mnist5k"
    train_size: int | None = None
    test_size: int | None = None
    subset: str = "first"
    preprocessing: str = "standardize"
    flatten: bool = False
    labels: str = "integer"
    dtype: str = "float32"
    data_dir: str | os.PathLike[str] | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(
                f"DataSpec.dataset: unknown data set {self.dataset!r}; "
                f"known: {', '.join(DATASETS)}")
        _check_choice("subset", self.subset, SUBSETS)
        _check_choice("preprocessing", self.preprocessing, PREPROCESSING)
        _check_choice("labels", self.labels, LABELS)
        _check_choice("dtype", self.dtype, DTYPES)
        for field in ("flatten", "download"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"DataSpec.{field}: expected True or False, "
                                 f"got {getattr(self, field)!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            raise ValueError(f"DataSpec.data_dir: expected a path or None, got {self.data_dir!r}")
        info = DATASETS[self.dataset]
        for field, available in (("train_size", info.train_size), ("test_size", info.test_size)):
            self._check_size(field, getattr(self, field), available, info.num_classes)

    def _check_size(self, field: str, size: object, available: int, num_classes: int) -> None:
        if size is None:
            return
        # bool is an int subclass; True examples is never what was meant.
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"DataSpec.{field}: expected a positive integer or None, got {size!r}")
        if size > available:
            raise ValueError(f"DataSpec.{field}: {size} examples asked for, but "
                             f"{self.dataset} has {available}")
        if self.subset == "balanced" and size % num_classes:
            raise ValueError(f"DataSpec.{field}: a balanced subset needs a multiple of the "
                             f"{num_classes} classes, got {size}")


def _check_choice(field: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"DataSpec.{field}: expected one of {', '.join(choices)}; got {value!r}")
