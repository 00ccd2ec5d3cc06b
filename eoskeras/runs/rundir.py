"""Creating, guarding and reopening run directories.

A run directory is never silently overwritten: an existing one is refused
unless the caller asks to resume it or, explicitly, to replace it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eoskeras.runs import layout

LOCK = ".lock"


class RunDirectoryError(Exception):
    """A run directory cannot be used as asked; the message says why and what to do."""


def is_run_directory(path: Path) -> bool:
    """A run's or a sweep's directory (what eoskeras may replace on request).

    environment.json counts: it is the first file a run writes, so a run killed
    before its recipe.yaml must still be replaceable.
    """
    return any((path / name).is_file() for name in (layout.ENVIRONMENT, layout.RESULT, layout.RECIPE,
                                                    layout.SWEEP_JSON))


def check(path: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Raise ``RunDirectoryError`` unless ``prepare_run_dir`` may use ``path`` as asked; changes nothing."""
    path = Path(path)
    if resume and overwrite:
        raise RunDirectoryError("--resume and --overwrite exclude each other")
    exists = path.exists() and any(path.iterdir()) if path.is_dir() else path.exists()
    if resume:
        if not is_run_directory(path):
            raise RunDirectoryError(f"{path}: nothing to resume (no {layout.RESULT} or {layout.RECIPE} there)")
        if not (path / layout.CHECKPOINTS / "state.json").is_file():
            raise RunDirectoryError(f"{path}: the run has no checkpoint yet; start it again with --overwrite")
        return
    if exists:
        if not overwrite:
            raise RunDirectoryError(
                f"{path} already exists; pass --resume to continue that run, --overwrite to replace it, "
                f"or --out to choose another directory")
        if path.is_symlink():
            raise RunDirectoryError(f"{path} is a symbolic link; refusing to delete what it points to")
        if not path.is_dir() or not is_run_directory(path):
            raise RunDirectoryError(f"{path} exists and is not an eoskeras run directory; refusing to delete it")


def _flat(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and key != "options":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_recipe(path: Path, recipe) -> None:
    """Raise ``RunDirectoryError`` when resuming ``path`` with a recipe other
    than the one it started with (the output directory may differ)."""
    from eoskeras.recipes import RecipeError, load_recipe

    try:
        recorded = load_recipe(Path(path) / layout.RECIPE)
    except RecipeError as err:
        raise RunDirectoryError(f"{path}: its {layout.RECIPE} cannot be read ({err}); start again with --overwrite") from err
    old, new = _flat(recorded.to_dict()), _flat(recipe.to_dict())
    changed = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
               if key != "output.dir" and old.get(key) != new.get(key)]
    if changed:
        raise RunDirectoryError(
            f"{path}: the recipe differs from the one this run started with ({'; '.join(changed)}); "
            "resume with the same recipe and overrides, or start a new run with --out or --overwrite")


def prepare_run_dir(path: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Make ``path`` ready for a new run (or check it can be resumed)."""
    path = Path(path)
    check(path, resume=resume, overwrite=overwrite)
    if resume:
        return path
    if overwrite and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_inside_working_directory(path: Path, field: str) -> None:
    """Raise ``RunDirectoryError`` when ``path`` (a recipe's relative
    ``field``) leads outside the working directory through a symbolic link:
    the recipe check refuses '..' and absolute paths, this the links on disk."""
    here = Path.cwd().resolve()
    if not Path(path).resolve().is_relative_to(here):
        raise RunDirectoryError(f"{field}: {str(path)!r} leads to {Path(path).resolve()} through a symbolic link, "
                                f"outside the working directory {here}; allowed: a path below it (or choose --out)")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the run directory's lock file while a run or sweep writes it.

    ``flock`` locks belong to the open file, so the kernel drops the lock
    when the process ends however it ends: a killed run leaves no stale lock.
    """
    fd = os.open(Path(path) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirectoryError(f"{path} is in use by another eoskeras process (it holds {Path(path) / LOCK}); "
                                "wait for it to end, or stop it, then --resume") from None
    try:
        yield
    finally:
        os.close(fd)


def _scratch_path(path: Path) -> Path:
    """One scratch directory per run directory and worker task, so that a
    worker restarted after a kill clears the one it could not remove."""
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    key = f"{Path(path).resolve()}|{task.get('type')}|{task.get('index')}"
    return Path(tempfile.gettempdir()) / f"eoskeras-worker-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def worker_scratch(path: Path, *, resume: bool) -> Iterator[Path]:
    """A private directory, removed afterwards, for a non-chief worker of a
    multi-worker run (Keras's convention: every worker saves its checkpoints,
    only the chief's are kept). Resuming starts from a copy of the chief's
    last checkpoint (and the curvature log its monitor state is read back
    from), so ``path`` must be visible to every worker (a shared file system)
    to resume; a fresh run needs only the chief's."""
    scratch = _scratch_path(path)
    shutil.rmtree(scratch, ignore_errors=True)  # what this worker left when it was killed
    scratch.mkdir(parents=True)
    try:
        if resume:
            check(path, resume=True)
            shutil.copy2(Path(path) / layout.RESULT, scratch / layout.RESULT)
            shutil.copytree(Path(path) / layout.CHECKPOINTS, scratch / layout.CHECKPOINTS)
            if (Path(path) / layout.CURVATURE).exists():
                shutil.copy2(Path(path) / layout.CURVATURE, scratch / layout.CURVATURE)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
