"""The recipes shipped with eoskeras.

The top-level ``recipes/`` folder of the repository is their source (the files
users read and copy); the build installs it as the package data
``eoskeras.recipes.shipped`` (a ``package-dir`` mapping in ``pyproject.toml``),
read here with ``importlib.resources``, so a wheel install finds them too.

Example: ``load_recipe(bundled_recipes()["quickstart"])``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "eoskeras.recipes.shipped"


def _recipes_dir() -> Path:
    try:
        # A data-only folder is a namespace package: files() is a MultiplexedPath
        # whose entries are real files (installed packages live on the file system).
        entries = list(resources.files(PACKAGE).iterdir())
    except ModuleNotFoundError:
        entries = []
    if entries:
        return Path(str(entries[0])).parent
    # An editable install (setuptools' editable finder does not map a data-only
    # folder) or a source checkout on sys.path: the repository's folder.
    return Path(__file__).resolve().parents[2] / "recipes"


RECIPES_DIR = _recipes_dir()


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe names (file stems) mapped to their files, sorted by name.

    Example: ``bundled_recipes()["quickstart"]`` -> ``.../recipes/quickstart.yaml``.
    """
    if not RECIPES_DIR.is_dir():
        return {}
    return {file.stem: file for file in sorted(RECIPES_DIR.glob("*.yaml"))}
