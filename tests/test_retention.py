"""The eigenvector retention rule, step by step (runs: test_cli.py, resume: test_reliability.py)."""
from __future__ import annotations

import numpy as np

from eoskeras.runs import layout
from eoskeras.runs.retention import is_kept, saved_steps, thin_eigenvectors


def test_keeps_first_latest_and_every_nth_whatever_the_order_of_writes(tmp_path):
    (tmp_path / layout.EIGENVECTORS).mkdir()
    for step in range(0, 110, 10):
        np.save(tmp_path / layout.eigenvector_file(step), np.zeros(2))
        thin_eigenvectors(tmp_path, step, first_step=0, every=10, vectors_every=4)
        assert saved_steps(tmp_path) == sorted({s for s in range(0, step, 40)} | {step})
    assert saved_steps(tmp_path) == [0, 40, 80, 100]


def test_full_history_and_an_odd_first_step():
    assert all(is_kept(s, 0, 10, 1) for s in range(0, 1000, 10))
    assert is_kept(7, 7, 10, 5) and not is_kept(17, 7, 10, 5) and is_kept(50, 7, 10, 5)
