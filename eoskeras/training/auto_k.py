"""Auto-k: track every eigenvalue above c × the stability threshold (central
flows' idea), growing or shrinking the number of tracked eigenpairs.

Before a measurement k is set to one more than the previous measurement's
count above the level (never below the user's ``top_k``); after it, while even
the smallest tracked eigenvalue is above the level, k doubles (warm-started
from the vectors found so far), up to ``max_k``. The rule depends on recorded
eigenvalues only, so a resumed run repeats it exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eoskeras.curvature.operators import SymmetricOperator
from eoskeras.curvature.spectrum import Spectrum
from eoskeras.curvature.tracker import EigenTracker


def count_above(eigenvalues: Sequence[float], level: float) -> int:
    return int(np.sum(np.asarray(eigenvalues) >= level))


def starting_k(previous: Sequence[float] | None, level: float, min_k: int, max_k: int) -> int:
    """k for the next measurement: the previous count above ``level`` plus one, within [min_k, max_k]."""
    wanted = min_k if previous is None else count_above(previous, level) + 1
    return int(min(max(wanted, min_k), max_k))


def grow_until_below(tracker: EigenTracker, op: SymmetricOperator, spectrum: Spectrum, level: float,
                     max_k: int) -> Spectrum:
    """Re-solve with twice the eigenpairs while all of them are above ``level``."""
    max_k = min(max_k, op.dim)
    hvps = spectrum.num_hvps
    while spectrum.eigenvalues[-1] >= level and tracker.k < max_k:
        tracker.k = min(2 * tracker.k, max_k)
        spectrum = tracker.update(op)
        hvps += spectrum.num_hvps
    return Spectrum(**{**spectrum.__dict__, "num_hvps": hvps})
