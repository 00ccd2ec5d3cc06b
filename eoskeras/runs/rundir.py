"""Creating, guarding and reopening run directories.

A run directory is never silently overwritten: an existing one is refused
unless the caller asks to resume it or, explicitly, to replace it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from eoskeras.runs import layout


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
    """Raise ``RunDirectoryError`` unless ``prepare`` may use ``path`` as asked; changes nothing."""
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


def prepare(path: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Make ``path`` ready for a new run (or check it can be resumed)."""
    path = Path(path)
    check(path, resume=resume, overwrite=overwrite)
    if resume:
        return path
    if overwrite and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
