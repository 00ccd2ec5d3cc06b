"""Which measurements' eigenvectors a run directory keeps on disk.

Every measurement's vectors are written (in ``vectors_dtype``) as it is made;
when the next one is written, earlier files are deleted unless they are the
first measurement's or every ``vectors_every``-th one's. The latest file is
therefore always there, and ``vectors_every=1`` keeps the full history. The
rule depends on the steps alone, so a resumed run keeps exactly the files an
uninterrupted one does. Resuming needs none of these files: the checkpoint
holds the warm-start vectors in float64.

The similarity metrics in the logs are computed in memory from float64
vectors and do not depend on what is kept.
"""
from __future__ import annotations

from pathlib import Path

from eoskeras.runs import layout


def is_kept(step: int, first_step: int, every: int, vectors_every: int) -> bool:
    """Whether the vectors measured at ``step`` stay once a later measurement exists."""
    return step == first_step or (step // every) % vectors_every == 0


def saved_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (Path(run_dir) / layout.EIGENVECTORS).glob("step_*.npy"))


def thin_eigenvectors(run_dir: Path, latest: int, first_step: int, every: int, vectors_every: int) -> None:
    """Delete the files before ``latest`` that the policy does not keep."""
    for step in saved_steps(run_dir):
        if step < latest and not is_kept(step, first_step, every, vectors_every):
            (Path(run_dir) / layout.eigenvector_file(step)).unlink(missing_ok=True)
