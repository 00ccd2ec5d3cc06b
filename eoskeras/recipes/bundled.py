"""The recipes shipped with eoskeras (the top-level ``recipes/`` folder).

Example: ``load_recipe(bundled_recipes()["quickstart"])``.
"""
from __future__ import annotations

from pathlib import Path

# eoskeras is installed editable from the repository, so the folder sits two
# levels above this package.
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe names (file stems) mapped to their files, sorted by name.

    Empty when the folder is absent (an install without the repository).

    Example: ``bundled_recipes()["quickstart"]`` -> ``.../recipes/quickstart.yaml``.
    """
    if not RECIPES_DIR.is_dir():
        return {}
    return {file.stem: file for file in sorted(RECIPES_DIR.glob("*.yaml"))}
