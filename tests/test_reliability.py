"""Reliability (issue 7): nothing lost under interruption, divergence and bad input.

Every check goes through the real command line: in process with Click's
CliRunner where that suffices, as a real process where a signal must be sent.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eoskeras.cli.main import main
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs import layout
from clitools import cli, eoskeras_process, trajectory, working_directory

# Checkpoints every 10 steps (max(curvature.every, 10)), so 40 steps hold four.
STEPS = 40
TRAIN = ("train", "quickstart", "--set", f"training.max_steps={STEPS}", "--set", "flatness.enabled=false",
         "--set", "curvature.top_k=2")


def invoke(*args: str) -> Result:
    """The command line in process, exceptions caught as a user would see them."""
    return CliRunner(env={"COLUMNS": "160"}).invoke(main, list(args))


def assert_clean_failure(result: Result, code: int, *named: str) -> None:
    """Exit ``code`` with a message naming each of ``named`` and no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for name in named:
        assert name in result.output, (name, result.output)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run (in process) that interrupted runs must reproduce."""
    with working_directory(tmp_path_factory.mktemp("reference")) as here:
        result = cli(*TRAIN, "--out", "run", "--quiet")
    assert result.exit_code == 0, result.output
    # Nothing is written outside the run directory.
    assert [p.name for p in here.iterdir()] == ["run"]
    return here / "run"


# --------------------------------------------------------------- bad run directories

def _write(relative: str, text: str) -> Callable[[Path], None]:
    return lambda run: (run / relative).write_text(text)


def _delete(pattern: str) -> Callable[[Path], None]:
    return lambda run: [p.unlink() for p in run.glob(pattern)]


def _truncate(pattern: str) -> Callable[[Path], None]:
    return lambda run: [p.write_bytes(p.read_bytes()[:100]) for p in run.glob(pattern)]


DAMAGE = {
    "state-json-garbage": _write("checkpoints/state.json", "garbage"),
    "state-json-not-an-object": _write("checkpoints/state.json", "[1, 2]"),
    "state-json-wrong-types": _write("checkpoints/state.json", '{"step": 40, "checkpoint": 7, "stop": []}'),
    "checkpoint-files-deleted": _delete("checkpoints/ckpt-*"),
    "checkpoint-data-truncated": _truncate("checkpoints/ckpt-40.data-*"),
    "callback-state-deleted": _delete("checkpoints/state_*.npz"),
    "result-json-garbage": _write(layout.RESULT, "{not json"),
    "result-json-deleted": _delete(layout.RESULT),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_checkpoint_gives_a_clear_error_on_resume(reference: Path, tmp_path: Path, damage) -> None:
    run = shutil.copytree(reference, tmp_path / "run")
    damage(run)
    result = invoke(*TRAIN, "--out", str(run), "--resume", "--quiet")
    assert_clean_failure(result, 1, "cannot resume", "--overwrite")


# ----------------------------------------------------------------------------- offline

def test_a_run_that_cannot_load_its_data_leaves_no_directory(tmp_path: Path) -> None:
    from eoskeras.data import DataUnavailableError
    from eoskeras.runs.runner import run_recipe

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    recipe = load_recipe(bundled_recipes()["cifar10_resnet"], [f"data.data_dir={json.dumps(str(data_dir))}"])
    with pytest.raises(DataUnavailableError):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not any(data_dir.iterdir())  # the data directory is only read


@pytest.mark.parametrize("command", [
    ("train", "cifar10_resnet", "--set", "data.data_dir={data_dir}"),
    ("train", "cifar10_resnet", "--data-dir", "{data_dir}"),
    ("sweep", "cifar10_resnet", "--lr-relative", "1,2", "--data-dir", "{data_dir}"),
], ids=["train-set", "train-data-dir", "sweep"])
def test_absent_dataset_fails_fast_with_the_remedy(tmp_path: Path, command: tuple[str, ...]) -> None:
    data_dir, cwd = tmp_path / "data", tmp_path / "cwd"
    data_dir.mkdir()
    cwd.mkdir()
    start = time.perf_counter()
    process = eoskeras_process(*(arg.format(data_dir=data_dir) for arg in command), cwd=cwd)
    output = process.communicate(timeout=120)[0]
    # The whole command, interpreter start-up included.
    assert time.perf_counter() - start < 5.0, output
    assert process.returncode == 1, output
    assert f"not prepared in {data_dir}" in output and "--data-dir" in output and "--download" in output
    assert "Traceback" not in output
    assert not any(cwd.iterdir()) and not any(data_dir.iterdir())
