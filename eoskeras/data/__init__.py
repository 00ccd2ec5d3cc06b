"""eoskeras.data: benchmark data as in-memory arrays for full-batch training.

Names are exported lazily (PEP 562) so that importing this package, or its
``catalog``, loads neither numpy-heavy code nor TensorFlow.

Example:

```python
from eoskeras.data import DataSpec, load_data
bundle = load_data(DataSpec("mnist5k", train_size=1000, labels="onehot"))
```
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DataSpec": "eoskeras.data.spec",
    "DataUnavailableError": "eoskeras.data.spec",
    "DataBundle": "eoskeras.data.loading",
    "load_data": "eoskeras.data.loading",
    "check_available": "eoskeras.data.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eoskeras.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
