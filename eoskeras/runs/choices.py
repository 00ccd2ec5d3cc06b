"""The tf.distribute strategies a run may name (no TensorFlow import).

``strategy.py`` builds them; recipe validation and the command line offer
this list before TensorFlow is loaded.
"""
from __future__ import annotations

STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker", "tpu")
