"""Benchmark data through tensorflow-datasets, failing fast when it is not on disk.

``tfds.load`` on a machine without network retries DNS for ~200 s before it
gives up. Here the prepared data is opened with downloads off (that fails in
~0.1 s when the data is absent); a download is attempted only when the caller
allows it, and only after a ~3 s reachability check of the download hosts.
"""
from __future__ import annotations

import queue
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from eoskeras.data.spec import DataSpec, DataUnavailableError

BATCH = 1024
REACH_TIMEOUT_S = 3.0


def iter_batches(spec: DataSpec, split: str,
                 limit: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (uint8 NHWC images, int labels) batches of a tfds split in file order.

    ``limit`` reads only the first ``limit`` examples.

    Example: ``x, y = next(iter_batches(DataSpec("cifar10"), "train", limit=100))``.
    """
    builder = _builder(spec)
    dataset = _open(builder, f"{split}[:{limit}]" if limit else split, spec.download)
    if limit:
        # Slicing already limits real data; tfds.testing.mock_data ignores the
        # slice and yields its num_examples, so cut again to keep one code path.
        dataset = dataset.take(limit)
    # Not batch_size=-1: under tfds.testing.mock_data it kills the process.
    yield from dataset.batch(BATCH).as_numpy_iterator()


def check_prepared(spec: DataSpec) -> None:
    """Raise ``DataUnavailableError`` when the data set is not prepared on disk.

    Imports no TensorFlow (tensorflow-datasets loads it lazily), so it answers in
    well under a second.
    """
    builder = _builder(spec)
    if not builder.is_prepared():
        raise _not_prepared(builder)


def describe(spec: DataSpec) -> str:
    """One line naming the tfds data set, its version and folder, for run records."""
    builder = _builder(spec)
    return f"tensorflow-datasets {builder.name} {builder.version} in {builder.data_dir}"


def _builder(spec: DataSpec) -> Any:
    data_dir = None if spec.data_dir is None else str(spec.data_dir)
    return tfds.builder(spec.dataset, data_dir=data_dir)


def _open(builder: Any, split: str, download: bool) -> Any:
    options = dict(split=split, as_supervised=True, shuffle_files=False,
                   # Read the shard files one after another: the default
                   # interleaves 16 of them, and then "the first N examples"
                   # of the whole split would not be its first N records.
                   read_config=tfds.ReadConfig(interleave_cycle_length=1))
    try:
        return builder.as_dataset(**options)
    except AssertionError:
        # tfds signals "could not find data" with an AssertionError; anything
        # else it asserts about prepared data is not ours to reinterpret.
        if builder.is_prepared():
            raise
    if not download:
        raise _not_prepared(builder)
    hosts = _download_hosts(builder)
    if not any_reachable(hosts):
        raise DataUnavailableError(
            f"{builder.name} is not prepared in {builder.data_dir_root} and cannot be "
            f"downloaded: no connection to {', '.join(f'{h}:{p}' for h, p in hosts)} "
            f"within {REACH_TIMEOUT_S:.0f} s. {_remedy(builder)}")
    builder.download_and_prepare()
    return builder.as_dataset(**options)


def _not_prepared(builder: Any) -> DataUnavailableError:
    return DataUnavailableError(f"{builder.name} is not prepared in {builder.data_dir_root}. {_remedy(builder)}")


def _remedy(builder: Any) -> str:
    return (
        "To get it, either run once on a machine with network access with downloads "
        "allowed (`--download`, or DataSpec(download=True)), which prepares it under "
        "the data directory, or point `--data-dir` (DataSpec(data_dir=...)) at a folder "
        f"that already holds the prepared tensorflow-datasets data ({builder.name}/"
        f"{builder.version}/ inside it, e.g. a copy of ~/tensorflow_datasets). "
        "The embedded 'mnist5k' data set needs no download.")


def _download_hosts(builder: Any) -> list[tuple[str, int]]:
    """(host, port) pairs a download would connect to first: a proxy, or the URLs' hosts."""
    proxies = urllib.request.getproxies()
    urls = list(type(builder).url_infos or {}) or ["https://storage.googleapis.com"]
    hosts = set()
    for url in urls:
        target = urllib.parse.urlsplit(url)
        proxy = proxies.get(target.scheme)
        if proxy:
            target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        hosts.add((target.hostname, target.port or (443 if target.scheme == "https" else 80)))
    return sorted(hosts)


def any_reachable(hosts: list[tuple[str, int]], timeout: float = REACH_TIMEOUT_S) -> bool:
    """True when a TCP connection to one of ``hosts`` opens within ``timeout`` seconds.

    The attempts run in daemon threads because name resolution ignores socket
    timeouts and can hang far longer on a misconfigured resolver; a hung
    attempt is abandoned, never waited for.
    """
    results: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def attempt(host: str, port: int) -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            results.put(True)
        except OSError:
            results.put(False)

    for host_port in hosts:
        threading.Thread(target=attempt, args=host_port, daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in hosts:
        try:
            if results.get(timeout=max(0.0, deadline - time.monotonic())):
                return True
        except queue.Empty:
            return False
    return False
