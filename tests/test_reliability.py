"""Reliability (issue 7): nothing lost under interruption, divergence and bad input.

The checks go through the real command line: in process with Click's
CliRunner where that suffices, as a real process where a signal must be sent
or a fresh interpreter matters.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from eoskeras.cli.main import main
from eoskeras.recipes import bundled_recipes, load_recipe
from eoskeras.runs import layout, rundir
from eoskeras.runs.files import read_jsonl
from clitools import cli, eoskeras_process, trajectory, wait_for_step, working_directory
from test_recipes import doc

# Checkpoints every 10 steps (max(curvature.every, 10)), so 40 steps hold four; metrics are logged every
# step, so a run killed between checkpoints has logged steps that its resumption must replace.
STEPS = 40
TRAIN = ("train", "quickstart", "--set", f"training.max_steps={STEPS}", "--set", "training.log_every=1",
         "--set", "flatness.enabled=false", "--set", "curvature.top_k=2")


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
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run (in process) that interrupted runs must reproduce."""
    with working_directory(tmp_path_factory.mktemp("reference")) as here:
        result = cli(*TRAIN, "--out", "run", "--quiet")
    assert result.exit_code == 0, result.output
    # Nothing is written outside the run directory.
    assert [p.name for p in here.iterdir()] == ["run"]
    return here / "run"


# ---------------------------------------------------------------------- interruption

def assert_appended_whole(run: Path, *, finished: bool) -> None:
    """Metrics files hold whole lines: a kill may tear only the last one; a
    finished run has none torn and as many CSV rows as JSON rows."""
    lines = (run / layout.METRICS_JSONL).read_text().splitlines()
    for line in lines[:-1] if not finished else lines:
        json.loads(line)
    with open(run / layout.METRICS_CSV, newline="") as handle:
        table = list(csv.reader(handle))
    header, rows = table[0], table[1:] if finished else table[1:-1]
    assert all(len(row) == len(header) for row in rows)
    if finished:
        assert len(rows) == len(lines)


def status(run: Path) -> str | None:
    """The run's status in result.json, None before the file is written."""
    try:
        return json.loads((run / layout.RESULT).read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def test_sigkill_at_arbitrary_steps_then_resume_reproduces_the_uninterrupted_run(reference: Path,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Killed between checkpoints, the second time while resuming from the first kill.
    for kill_at, resume in ((13, ()), (27, ("--resume",))):
        process = eoskeras_process(*TRAIN, "--out", str(out), *resume)
        wait_for_step(process, kill_at)
        process.kill()
        process.communicate(timeout=60)
        assert status(out) == "running"
        assert_appended_whole(out, finished=False)
    resumed = eoskeras_process(*TRAIN, "--out", str(out), "--resume", "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert status(out) == "max_steps"
    assert_appended_whole(out, finished=True)
    assert trajectory(out) == trajectory(reference)


def test_a_second_ctrl_c_during_the_graceful_stop_stops_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = eoskeras_process(*TRAIN, "--out", str(out))
    wait_for_step(process, 3)
    process.send_signal(signal.SIGINT)
    # result.json says "interrupted" once the checkpoint is written; the plots and report follow.
    sent = time.monotonic()
    while status(out) != "interrupted" and time.monotonic() < sent + 60:
        time.sleep(0.01)
    assert time.monotonic() - sent < 5  # the first Ctrl-C is honoured within seconds
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 130, output
    assert "stopped at once" in output and "--resume" in output and "Traceback" not in output
    state = json.loads((out / layout.CHECKPOINTS / "state.json").read_text())
    assert state["step"] == json.loads((out / layout.RESULT).read_text())["stop_step"] < STEPS


def test_two_resumes_at_once_the_second_is_refused_and_a_killed_holder_leaves_no_stale_lock(
        reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = eoskeras_process(*TRAIN, "--out", str(out))
    wait_for_step(process, 13)
    process.kill()
    process.communicate(timeout=60)
    first = eoskeras_process(*TRAIN, "--out", str(out), "--resume")
    try:
        wait_for_step(first, 15)  # resumed and training: it holds the lock
        assert_clean_failure(invoke(*TRAIN, "--out", str(out), "--resume"), 2, "in use by another eoskeras process",
                             str(out / rundir.LOCK))
    finally:
        first.kill()  # SIGKILL while holding the lock: the kernel releases it
        first.communicate(timeout=60)
    resumed = eoskeras_process(*TRAIN, "--out", str(out), "--resume", "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert status(out) == "max_steps"
    assert_appended_whole(out, finished=True)
    assert trajectory(out) == trajectory(reference)  # no step logged twice


SWEEP = ("sweep", "quickstart", "--lr-relative", "1.5,1.6", "--jobs", "1", "--set", "training.max_steps=30",
         "--set", "training.log_every=1", "--set", "flatness.enabled=false", "--set", "curvature.top_k=2")


def sweep_points(sweep: Path) -> list[dict[str, Any]]:
    try:
        return json.loads((sweep / layout.SWEEP_JSON).read_text())["points"]
    except (OSError, ValueError):
        return []


def test_ctrl_c_during_a_sweep_keeps_finished_points_and_resume_continues(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    process = eoskeras_process(*SWEEP, "--out", str(sweep))
    try:
        deadline = time.monotonic() + 300
        # The first point has finished and the second is training.
        while not (sweep_points(sweep)[:1] and sweep_points(sweep)[0]["status"] == "max_steps"
                   and list(sweep.glob("lr_01_*/" + layout.METRICS_JSONL))):
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == 130, output
    assert "Traceback" not in output and "--resume" in output
    points = sweep_points(sweep)
    assert [p["status"] for p in points] == ["max_steps", "interrupted"]
    (first,) = sweep.glob("lr_00_*")
    kept = {p.name: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    assert_clean_failure(invoke(*SWEEP, "--out", str(sweep), "--lr-relative", "1.5,1.7", "--resume"), 2,
                         "the points differ")
    resumed = eoskeras_process(*SWEEP, "--out", str(sweep), "--resume", "--quiet")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    points = sweep_points(sweep)
    assert [p["status"] for p in points] == ["max_steps", "max_steps"] and [p["steps"] for p in points] == [30, 30]
    assert {p.name: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()} == kept  # not run again
    (second,) = sweep.glob("lr_01_*")
    assert [r["step"] for r in read_jsonl(second / layout.METRICS_JSONL)] == list(range(1, 31))


# Runs ``eoskeras`` with a file-size limit from step 15 on (RLIMIT_FSIZE: writes past it fail with EFBIG).
FILE_SIZE_LIMITED = """
import resource, sys
from eoskeras.cli.main import main
from eoskeras.runs.recorder import RunRecorder
on_epoch_end = RunRecorder.on_epoch_end
def limited(self, epoch, logs=None):
    if epoch + 1 == 15:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return on_epoch_end(self, epoch, logs)
RunRecorder.on_epoch_end = limited
main(sys.argv[1:], prog_name="eoskeras")
"""


@pytest.mark.parametrize("fails, extra", [
    ("eigenvectors/step_0000020.npy", ()),  # 440 kB of eigenvectors at step 20
    ("checkpoint 20", ("--set", "curvature.enabled=false")),  # TensorFlow's 220 kB checkpoint at step 20
], ids=["eigenvectors", "checkpoint"])
def test_a_file_size_limit_mid_run_ends_cleanly_and_the_run_resumes(reference: Path, tmp_path: Path, fails: str,
                                                                     extra: tuple[str, ...]) -> None:
    out = tmp_path / "run"
    args = (*TRAIN, *extra, "--out", str(out), "--quiet")
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and fails in done.stderr and "--resume" in done.stderr, done.stderr
    # Nothing half-written is left to be read: no temporary file; state.json names a whole checkpoint.
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / layout.CHECKPOINTS / "state.json").read_text())["step"] == 10
    for vectors in (out / layout.EIGENVECTORS).glob("*.npy"):
        np.load(vectors)
    resumed = eoskeras_process(*args, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert status(out) == "max_steps"
    assert_appended_whole(out, finished=True)
    if not extra:
        assert trajectory(out) == trajectory(reference)
    assert [r["step"] for r in read_jsonl(out / layout.METRICS_JSONL)] == list(range(1, STEPS + 1))


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
    "first-vectors-deleted": _delete("checkpoints/first_vectors.npz"),
    "curvature-log-cut-short": lambda run: (run / layout.CURVATURE).write_text(
        (run / layout.CURVATURE).read_text().splitlines(keepends=True)[0]),
    "result-json-garbage": _write(layout.RESULT, "{not json"),
    "result-json-deleted": _delete(layout.RESULT),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_checkpoint_gives_a_clear_error_on_resume(reference: Path, tmp_path: Path,
                                                           damage: Callable[[Path], None]) -> None:
    run = shutil.copytree(reference, tmp_path / "run")
    damage(run)
    result = invoke(*TRAIN, "--out", str(run), "--resume", "--quiet")
    assert_clean_failure(result, 1, "cannot resume", "--overwrite")


def test_checkpoints_write_nothing_twice(reference: Path) -> None:
    """The first measurement's vectors are written once and the records are
    counted, not copied: a checkpoint's cost does not grow with the run."""
    checkpoints = reference / layout.CHECKPOINTS
    state = json.loads((checkpoints / "state.json").read_text())
    measured = read_jsonl(reference / layout.CURVATURE)
    assert state["monitor"]["records"] == len(measured) == STEPS // 10 + 1
    first = checkpoints / state["first_vectors"]
    # Written at the first checkpoint (step 10), before the milestone weights of step 20.
    assert first.stat().st_mtime_ns < (checkpoints / layout.MILESTONES / "step_0000020.index").stat().st_mtime_ns
    with np.load(first) as stored:
        vectors = stored["first"]
    # The eigenvector files are stored in the recipe's vectors_dtype (float16 by default).
    np.testing.assert_allclose(vectors, np.load(reference / layout.eigenvector_file(0)), rtol=1e-3, atol=1e-7)


def test_a_checkpoint_with_its_records_inline_still_resumes(reference: Path, tmp_path: Path) -> None:
    """A checkpoint as written before first_vectors.npz: the records inline in
    state.json, the first vectors in the step's npz."""
    run = shutil.copytree(reference, tmp_path / "run")
    checkpoints = run / layout.CHECKPOINTS
    state = json.loads((checkpoints / "state.json").read_text())
    state["monitor"]["records"] = [r for r in read_jsonl(run / layout.CURVATURE) if r["step"] <= state["step"]]
    with np.load(checkpoints / state["arrays"]) as stored:
        arrays = dict(stored)
    with np.load(checkpoints / state.pop("first_vectors")) as stored:
        arrays["first"] = stored["first"]
    np.savez(checkpoints / state["arrays"], **arrays)
    (checkpoints / "first_vectors.npz").unlink()
    (checkpoints / "state.json").write_text(json.dumps(state))
    (run / layout.CURVATURE).unlink()  # the inline records are what is restored
    result = invoke(*TRAIN, "--out", str(run), "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((run / layout.RESULT).read_text())["curvature_measurements"] == STEPS // 10 + 1


def test_resuming_with_a_different_recipe_is_refused(reference: Path, tmp_path: Path) -> None:
    run = shutil.copytree(reference, tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    result = invoke(*TRAIN, "--set", "optimizer.lr_relative=2.0", "--out", str(run), "--resume", "--quiet")
    assert_clean_failure(result, 2, "optimizer.lr_relative", "1.5 -> 2.0")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("damage", ["checkpoint-files-deleted", "checkpoint-data-truncated"])
def test_spectrum_of_a_damaged_run_gives_a_clear_error(reference: Path, tmp_path: Path, damage: str) -> None:
    run = shutil.copytree(reference, tmp_path / "run")
    DAMAGE[damage](run)
    assert_clean_failure(invoke("spectrum", str(run), "--top-k", "1", "--trace-hvps", "3"), 1, str(run))


@pytest.mark.parametrize("args", [("report", "{dir}"), ("report", "{dir}", "--json"),
                                  (*TRAIN, "--out", "{dir}", "--resume")], ids=["report", "report-json", "resume"])
@pytest.mark.parametrize("files", [(), ("notes.txt",)], ids=["empty", "not-a-run"])
def test_a_directory_without_a_run_exits_2(tmp_path: Path, args: tuple[str, ...], files: tuple[str, ...]) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    for name in files:
        (directory / name).write_text("mine")
    assert_clean_failure(invoke(*(arg.format(dir=directory) for arg in args)), 2, str(directory))
    assert sorted(p.name for p in directory.iterdir()) == list(files)


def test_a_run_killed_before_its_recipe_was_written_can_be_replaced(tmp_path: Path) -> None:
    # environment.json is the first file a run writes; it is killed while resolving its learning rate.
    run = tmp_path / "run"
    run.mkdir()
    (run / layout.ENVIRONMENT).write_text("{}")
    assert_clean_failure(invoke(*TRAIN, "--out", str(run), "--resume"), 2, "no checkpoint yet", "--overwrite")
    rundir.prepare_run_dir(run, overwrite=True)
    assert run.is_dir() and not any(run.iterdir())


# -------------------------------------------------------------------------- divergence

NON_FINITE = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def strict_json(text: str) -> object:
    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=reject)


def test_sweep_over_a_factor_of_100_records_divergence_and_marks_non_finite_values(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    # No divergence factor: the diverging point runs on until its loss is no longer finite.
    result = cli("sweep", "quickstart", "--lr-relative", "0.1,1,10", "--jobs", "2", "--out", str(out),
                 "--set", "training.max_steps=20", "--set", "training.stop.divergence_factor=null",
                 "--set", "curvature.top_k=2", "--set", "flatness.trace_samples=6", "--set", "flatness.density=false",
                 "--set", "flatness.noise_samples=2")
    assert result.exit_code == 0, result.output
    points = json.loads((out / layout.SWEEP_JSON).read_text())["points"]
    with open(out / layout.SWEEP_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [p["status"] for p in points] == [r["status"] for r in rows] == ["max_steps", "max_steps", "diverged"]
    diverged, row = points[2], rows[2]
    run = out / diverged["run_dir"]
    recorded = json.loads((run / layout.RESULT).read_text())
    assert recorded["status"] == "diverged" and recorded["stop_step"] == diverged["steps"] == int(row["steps"]) < 20
    assert recorded["stop_reason"] == diverged["stop_reason"] == row["stop_reason"]
    assert diverged["stop_reason"].startswith("diverged: training loss is ")
    assert points[0]["test_accuracy"] is not None and diverged["test_accuracy"] is None
    losses = [r["loss"] for r in read_jsonl(run / layout.METRICS_JSONL)]
    assert not math.isfinite(losses[-1])  # the non-finite value really is in the files
    reports = [result.output, cli("report", str(out), "--no-plots").output,
               cli("report", str(run), "--no-plots").output]
    for text in reports:
        assert "diverged" in text
        assert not NON_FINITE.search(text.replace(diverged["stop_reason"], "")), text
    assert_clean_failure(invoke("spectrum", str(run), "--top-k", "1", "--trace-hvps", "3"), 1, "not finite")
    strict_json(cli("report", str(run), "--json").output)
    strict_json(cli("report", str(out), "--json").output)
    assert list((out / layout.PLOTS).glob("*.png")) and list((run / layout.PLOTS).glob("*.png"))


def test_an_undefined_error_bar_is_left_out_not_shown_as_inf(reference: Path) -> None:
    # Hutch++ with 3 HVPs leaves one sample for the deflated part: its standard error is undefined.
    spectrum = ("spectrum", str(reference), "--top-k", "1", "--trace-hvps", "3")
    text = cli(*spectrum).output
    assert "trace (Hutch++, 3 HVPs)" in text and not NON_FINITE.search(text) and "diverged" not in text
    assert strict_json(cli(*spectrum, "--json").output)["trace_stderr"] is None


# ------------------------------------------------------------------------- determinism

def test_a_run_repeats_exactly_from_what_it_recorded(reference: Path, tmp_path: Path) -> None:
    recorded = load_recipe(reference / layout.RECIPE)
    assert recorded == load_recipe(bundled_recipes()["quickstart"], TRAIN[3::2])
    again = tmp_path / "again"
    args = ("train", str(reference / layout.RECIPE), "--out", str(again), "--quiet")
    process = eoskeras_process(*args)
    assert process.wait(timeout=300) == 0, process.stdout.read()
    # Same seed, a fresh process, the recorded recipe alone: the same numbers, bit for bit.
    assert trajectory(again) == trajectory(reference)
    environment = json.loads((again / layout.ENVIRONMENT).read_text())
    assert environment["command"][1:] == list(args)
    assert (environment["seed"], environment["strategy"]) == (recorded.seed, recorded.strategy)
    assert environment["deterministic_ops"] is True and environment["devices"] and environment["python"]
    assert all(environment["packages"][name] for name in ("eoskeras", "tensorflow", "keras", "numpy"))


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
    ("spectrum", "--dataset", "cifar10", "--data-dir", "{data_dir}"),
], ids=["train-set", "train-data-dir", "sweep", "spectrum"])
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


# ------------------------------------------------------------------------- bad input

R = "recipe.yaml"
TAG = "!!python/object/apply:os.system ['touch pwned']"


def case(name: str, args: tuple[str, ...], named: str, files: dict[str, str | bytes] | None = None) -> Any:
    """A command line run in an empty working directory holding ``files``."""
    return pytest.param(args, files or {}, named, id=name)


def recipe_case(name: str, content: str | bytes, named: str = R) -> Any:
    return case(name, ("train", R), named, {R: content})


def override_case(name: str, override: str, named: str) -> Any:
    return case(name, ("train", "quickstart", "--set", override), named)


def sweep_case(name: str, points: tuple[str, ...], named: str) -> Any:
    return case(name, ("sweep", "quickstart", *points), named)


MALFORMED = [
    # wrong types
    recipe_case("lr-text", doc(optimizer="{lr: fast}"), "optimizer.lr"),
    recipe_case("steps-bool", doc(training="{max_steps: true}"), "training.max_steps"),
    recipe_case("flatten-text", doc(data="{dataset: mnist5k, flatten: maybe}"), "data.flatten"),
    recipe_case("top-k-list", doc(curvature="{top_k: [2]}"), "curvature.top_k"),
    recipe_case("seed-date", doc(seed="2024-01-01"), "seed"),
    recipe_case("options-list", doc(model="{name: fc-tanh, options: [width]}"), "model.options"),
    recipe_case("section-a-number", doc(training="5"), "training"),
    override_case("set-steps-text", "training.max_steps=abc", "training.max_steps"),
    # unknown keys
    recipe_case("unknown-section", doc(optimiser="{lr: 0.1}"), "optimiser"),
    recipe_case("unknown-nested-key", doc(training="{stop: {acc: 0.9}}"), "training.stop.acc"),
    recipe_case("unknown-model-option", doc(model="{name: fc-tanh, options: {widht: 8}}"), "model.options.widht"),
    override_case("set-unknown-key", "training.stop.acc=1", "training.stop.acc"),
    override_case("set-names-a-section", "optimizer=adam", "optimizer"),
    # negative or zero learning rates
    recipe_case("lr-negative", doc(optimizer="{lr: -0.1}"), "optimizer.lr"),
    recipe_case("lr-zero", doc(optimizer="{lr: 0}"), "optimizer.lr"),
    recipe_case("no-lr", doc(optimizer="{name: gd}"), "optimizer.lr"),
    override_case("set-lr-negative", "optimizer.lr=-1", "optimizer.lr"),
    override_case("set-lr-relative-zero", "optimizer.lr_relative=0", "optimizer.lr_relative"),
    sweep_case("sweep-lr-negative", ("--lr", "0.1,-2"), "optimizer.lr"),
    sweep_case("sweep-lr-relative-zero", ("--lr-relative", "0"), "optimizer.lr_relative"),
    # missing files
    case("missing-recipe", ("train", "missing.yaml"), "missing.yaml"),
    case("recipe-a-directory", ("train", "sub"), "a directory", {"sub/notes.txt": "x"}),
    case("spectrum-missing-model", ("spectrum", "missing.keras"), "missing.keras"),
    case("spectrum-not-a-model", ("spectrum", R), "not a loadable Keras model", {R: doc()}),
    # unknown data sets, models, optimisers
    recipe_case("unknown-dataset", doc(data="{dataset: cifar11}"), "data.dataset"),
    recipe_case("unknown-model", doc(model="{name: resnet18}"), "model.name"),
    recipe_case("unknown-optimizer", doc(optimizer="{name: lamb, lr: 0.1}"), "optimizer.name"),
    override_case("set-unknown-dataset", "data.dataset=imagenet", "data.dataset"),
    case("spectrum-unknown-dataset", ("spectrum", "--dataset", "cifar11"), "--dataset"),
    # impossible sizes
    recipe_case("hessian-above-train", doc(data="{dataset: mnist5k, train_size: 100}",
                                           curvature="{hessian_size: 200}"), "curvature.hessian_size"),
    recipe_case("train-above-dataset", doc(data="{dataset: mnist5k, train_size: 5000}"), "data.train_size"),
    recipe_case("batch-above-train", doc(data="{dataset: mnist5k, train_size: 100}", training="{batch_size: 200}"),
                "training.batch_size"),
    recipe_case("hvps-below-top-k", doc(curvature="{top_k: 20, max_hvps: 10}"),
                "curvature.max_hvps"),
    override_case("set-test-above-dataset", "data.test_size=100000", "data.test_size"),
    case("spectrum-examples-above-dataset", ("spectrum", "--examples", "5000"), "--examples"),
    # YAML syntax
    recipe_case("yaml-unclosed-brace", "name: t\ndata: {dataset: mnist5k\n"),
    recipe_case("yaml-tab-indent", "name: t\ndata:\n\tdataset: mnist5k\n"),
    recipe_case("yaml-duplicate-key", doc(optimizer="{lr: 0.1, lr: 0.2}"), "optimizer.lr"),
    recipe_case("yaml-two-documents", doc() + "---\nname: u\n"),
    recipe_case("yaml-empty", ""),
    recipe_case("yaml-a-list", "- name: t\n"),
    override_case("set-bad-yaml", "optimizer.lr=[0.1", "optimizer.lr"),
    # non-UTF-8 bytes (a shell passes undecodable argv bytes as surrogates)
    recipe_case("bytes-not-utf8", b"name: t\ndata: {dataset: \xff\xfe}\n"),
    recipe_case("latin-1-comment", "# caf\xe9\n".encode("latin-1") + doc().encode()),
    override_case("set-not-utf8", "data.dataset=\udcff\udcfe", "data.dataset"),
    # huge numbers
    recipe_case("lr-1e400", doc(optimizer="{lr: 1e400}"), "optimizer.lr"),
    recipe_case("steps-1e30", doc(training="{max_steps: 1e30}"), "training.max_steps"),
    recipe_case("seed-2-to-the-40", doc(seed=str(2**40)), "seed"),
    override_case("set-trace-samples-1e12", "flatness.trace_samples=1000000000000", "flatness.trace_samples"),
    override_case("set-top-k-1e9", "curvature.top_k=1e9", "curvature.top_k"),
    sweep_case("sweep-lr-1e400", ("--lr", "1e400"), "optimizer.lr"),
    sweep_case("sweep-grid-billions-of-points", ("--grid", "1:1e300:1.0000001"), "--grid"),
    # paths that would leave the output directory
    recipe_case("output-dotdot", doc(output="{dir: runs/../../x}"), "output.dir"),
    recipe_case("output-absolute", doc(output="{dir: /tmp/x}"), "output.dir"),
    recipe_case("output-home", doc(output="{dir: ~/x}"), "output.dir"),
    recipe_case("name-with-a-path", doc(name="../evil"), "name"),
    override_case("set-output-dotdot", "output.dir=../../etc", "output.dir"),
    override_case("set-output-absolute", "output.dir=/etc", "output.dir"),
    # YAML that would run code when loaded unsafely
    recipe_case("python-tag", f"name: {TAG}\n"),
    override_case("set-python-tag", f"name={TAG}", "name"),
    # sweep points
    sweep_case("sweep-points-not-numbers", ("--lr", "a,b"), "--lr"),
    sweep_case("sweep-two-kinds-of-points", ("--lr", "0.1", "--grid", "1:2"), "--grid"),
]


@pytest.mark.parametrize("args, files, named", MALFORMED)
def test_malformed_input_exits_2_naming_the_field_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], files: dict[str, str | bytes],
        named: str) -> None:
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = sorted(tmp_path.rglob("*"))
    assert_clean_failure(invoke(*args), 2, named)
    assert sorted(tmp_path.rglob("*")) == before


def test_the_malformed_corpus_is_large_enough() -> None:
    assert len(MALFORMED) >= 30 and len({c.id for c in MALFORMED}) == len(MALFORMED)


# ------------------------------------------------------------------------------ safety

@pytest.mark.parametrize("command", [TRAIN, SWEEP], ids=["train", "sweep"])
def test_a_default_output_dir_through_a_symlink_out_of_the_working_directory_is_refused(
        tmp_path: Path, command: tuple[str, ...]) -> None:
    outside, here = tmp_path / "outside", tmp_path / "cwd"
    outside.mkdir()
    here.mkdir()
    (here / "runs").symlink_to(outside)  # output.dir defaults to runs/<name>
    with working_directory(here):
        result = invoke(*command)
    assert_clean_failure(result, 2, "symbolic link", "outside the working directory")
    assert not any(outside.iterdir())


def _model_with_code(marker: Path) -> Any:
    import keras

    # The lambda's bytecode is saved with the model and loading it unsafely runs it. Built from source so
    # that the marker's path is a constant of the code (Keras drops default arguments).
    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    return keras.Sequential([keras.Input((784,)), keras.layers.Lambda(touch), keras.layers.Dense(10)])


def _model_of_another_shape(_marker: Path) -> Any:
    import keras

    return keras.Sequential([keras.Input((7,)), keras.layers.Dense(10)])


@pytest.mark.parametrize("build, named", [(_model_with_code, "Lambda"), (_model_of_another_shape, "--dataset")],
                         ids=["python-code", "wrong-input-shape"])
def test_spectrum_refuses_a_saved_model_it_must_not_or_cannot_use(tmp_path: Path, build: Callable[[Path], Any],
                                                                   named: str) -> None:
    marker = tmp_path / "code-ran"
    build(marker).save(tmp_path / "model.keras")
    marker.unlink(missing_ok=True)  # building the model called the lambda once
    result = invoke("spectrum", str(tmp_path / "model.keras"), "--top-k", "1", "--trace-hvps", "3",
                    "--examples", "20")
    assert_clean_failure(result, 2, named)
    assert not marker.exists()


def _plain_directory(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("mine")


def _link_to_a_run(path: Path) -> None:
    target = path.with_name("target")
    target.mkdir()
    (target / layout.RESULT).write_text("{}")
    path.symlink_to(target)


def _a_file(path: Path) -> None:
    path.write_text("mine")


@pytest.mark.parametrize("make", [_plain_directory, _link_to_a_run, _a_file],
                         ids=["not-a-run-directory", "symlink-to-a-run", "a-file"])
def test_overwrite_never_deletes_what_is_not_a_run_directory(tmp_path: Path, make: Callable[[Path], None]) -> None:
    out = tmp_path / "out"
    make(out)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = invoke(*TRAIN, "--out", str(out), "--overwrite", "--quiet")
    assert_clean_failure(result, 2, str(out))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
