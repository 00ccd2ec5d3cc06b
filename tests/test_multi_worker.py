"""Multi-worker training on loopback (issue 14): two worker processes, started
and stopped by the test, against one process.

The quickstart is cut to 20 steps with two eigenvalues every 5 steps, one
multi-worker run is interrupted and resumed (a few minutes on two busy
cores), and every process runs under a timeout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from eoskeras.cli.launch import tf_configs
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl
from clitools import cli, wait_for_step, working_directory

STEPS = 20
TRAIN = ("train", "quickstart", "--set", f"training.max_steps={STEPS}", "--set", "training.log_every=1",
         "--set", "flatness.enabled=false", "--set", "curvature.every=5", "--set", "curvature.top_k=2")
TIMEOUT = 420  # seconds for one multi-worker run on a loaded 2-core machine

pytestmark = pytest.mark.slow


def env(tmp: Path, **extra: str) -> dict[str, str]:
    """Worker environment; TMPDIR is the test's, to see the scratch directories go."""
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", TMPDIR=str(tmp), **extra)


def launch(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eoskeras", "launch", "--workers", "2", *args], cwd=cwd,
                          env=env(cwd.parent / "tmp"), capture_output=True, text=True, timeout=TIMEOUT)


def final_weights(run: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / layout.CHECKPOINTS)))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "/_trainable_variables/" in k}


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with working_directory(tmp_path_factory.mktemp("single")) as here:
        result = cli(*TRAIN, "--out", "run", "--quiet")
    assert result.exit_code == 0, result.output
    return here / "run"


def test_two_workers_match_one_process_survive_a_lost_worker_and_only_the_chief_writes(single: Path,
                                                                                        tmp_path: Path) -> None:
    """Two workers started by the test; worker 1 is killed after the checkpoint at step 10, the chief ends
    with a clear error, and a restart through ``eoskeras launch --resume`` finishes the run. Every step
    matches one process to float32 round-off."""
    here = tmp_path / "cwd"
    here.mkdir()
    workers = [subprocess.Popen([sys.executable, "-m", "eoskeras", *TRAIN, "--out", "run", "--strategy",
                                 "multi_worker"], cwd=here, env=env(tmp_path / "tmp", TF_CONFIG=json.dumps(config)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for config in tf_configs(2)]
    try:
        wait_for_step(workers[0], 13)
        workers[1].kill()
        # The chief sees the lost peer (its heartbeats stop) and ends with a clear error.
        output = workers[0].communicate(timeout=120)[0]
    finally:
        for w in workers:
            w.kill()
            w.communicate()
    assert workers[0].returncode == 1, output
    assert "Traceback" not in output
    assert "a worker of this multi-worker run was lost" in output and "--resume" in output
    run = here / "run"
    assert json.loads((run / layout.CHECKPOINTS / "state.json").read_text())["step"] == 10
    done = launch(here, *TRAIN, "--out", "run", "--quiet", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr

    environment = json.loads((run / layout.ENVIRONMENT).read_text())
    assert environment["strategy"] == "multi_worker" and environment["replicas"] == 2
    result, reference = (json.loads((r / layout.RESULT).read_text()) for r in (run, single))
    assert result["status"] == "max_steps" and result["stop_step"] == STEPS
    assert rel(result["lr"], reference["lr"]) < 1e-5
    metrics, expected = read_jsonl(run / layout.METRICS_JSONL), read_jsonl(single / layout.METRICS_JSONL)
    assert [r["step"] for r in metrics] == [r["step"] for r in expected] == list(range(1, STEPS + 1))
    assert rel([r["loss"] for r in metrics], [r["loss"] for r in expected]) < 1e-5
    curvature, expected = read_jsonl(run / layout.CURVATURE), read_jsonl(single / layout.CURVATURE)
    assert [r["step"] for r in curvature] == [r["step"] for r in expected] == [0, 5, 10, 15, 20]
    assert rel([r["eigenvalues"] for r in curvature], [r["eigenvalues"] for r in expected]) < 1e-5
    weights, expected = final_weights(run), final_weights(single)
    assert weights.keys() == expected.keys() and len(weights) == 6
    for key in weights:
        assert rel(weights[key], expected[key]) < 1e-5, key
    # One run directory, written by the chief; the other worker's scratch directories are gone.
    assert [p.name for p in here.iterdir()] == ["run"]
    assert not list((tmp_path / "tmp").glob("eoskeras-worker-*"))
