"""What a run ran on: versions, devices, strategy, seed, command line."""
from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_record(*, seed: int, strategy: str, replicas: int, deterministic: bool) -> dict[str, Any]:
    import tensorflow as tf

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in
                     ("eoskeras", "tensorflow", "keras", "tensorflow-datasets", "numpy")},
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "strategy": strategy,
        "replicas": replicas,
        "seed": seed,
        "deterministic_ops": deterministic,
        "command": sys.argv,
    }
