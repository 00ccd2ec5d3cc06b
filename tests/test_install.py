"""A wheel install, outside the repository, finds every bundled recipe (issue 14).

The wheel is built from this checkout and installed with ``--target`` into a
temporary folder (no dependencies: they come from the test environment), and
the command line runs from another folder with only that install of eoskeras.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from test_recipes import BUNDLED, REPO


def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_wheel_install_finds_every_bundled_recipe_by_name(tmp_path: Path) -> None:
    pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO))
    (wheel,) = (tmp_path / "dist").glob("eoskeras-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"eoskeras/recipes/shipped/{n}.yaml" for n in BUNDLED} <= set(names)
    assert not any(n.startswith(("recipes/", "cli/")) for n in names)  # nothing top-level besides the package

    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    elsewhere.mkdir()
    code = ("import json, eoskeras\n"
            "from eoskeras.recipes import bundled_recipes, load_recipe\n"
            "print(json.dumps({'package': eoskeras.__file__,\n"
            "                  'recipes': {n: [str(p), load_recipe(p).name] for n, p in bundled_recipes().items()}}))\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["package"]).is_relative_to(target)
    assert sorted(found["recipes"]) == list(BUNDLED)
    for name, (path, recipe_name) in found["recipes"].items():
        assert Path(path).is_relative_to(target) and recipe_name == name
    # By name through the command line, as a user would: `eoskeras recipes` lists each from the install.
    done = subprocess.run([sys.executable, "-m", "eoskeras", "recipes", "--json"], cwd=elsewhere, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows] == list(BUNDLED) and all("error" not in r for r in rows)
    assert all(Path(r["path"]).is_relative_to(target) for r in rows)
