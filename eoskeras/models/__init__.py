"""eoskeras.models: the model zoo (the paper's and Cohen et al.'s benchmarks).

``build_model`` is exported lazily (PEP 562): importing this package, or its
``catalog``, does not load Keras or TensorFlow.

Example:

```python
from eoskeras.models import build_model
model = build_model("vgg10_base8_bn", (32, 32, 3), 10, seed=0)
```
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_model"]


def __getattr__(name: str) -> Any:
    if name != "build_model":
        raise AttributeError(f"module 'eoskeras.models' has no attribute {name!r}")
    return importlib.import_module("eoskeras.models.registry").build_model


def __dir__() -> list[str]:
    return __all__
