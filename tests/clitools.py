"""Driving the command line from tests: in process (CliRunner) or as a real process."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner, Result

from eoskeras.cli.main import main
from eoskeras.runs import layout
from eoskeras.runs.files import read_jsonl


def cli(*args: str) -> Result:
    # Wide enough that rich tables are not truncated.
    return CliRunner(env={"COLUMNS": "160"}).invoke(main, list(args), catch_exceptions=False)


def eoskeras_process(*args: str, **kwargs: Any) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "eoskeras", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def wait_for_step(process: subprocess.Popen, step: int) -> list[str]:
    """Read the plain progress lines of a training process until it reports ``step`` or later."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        match = re.match(r"step (\d+)/", line)
        if match and int(match.group(1)) >= step:
            return lines
    raise AssertionError("the run ended before step %d:\n%s" % (step, "".join(lines)))


def trajectory(run_dir: Path) -> dict[str, Any]:
    """What a run computed, without wall-clock timings: every metrics row, every
    curvature record and every saved eigenvector array."""
    def rows(name: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(run_dir / name)]

    vectors = {p.name: np.load(p).tobytes() for p in sorted((run_dir / layout.EIGENVECTORS).glob("*.npy"))}
    return {"metrics": rows(layout.METRICS_JSONL), "curvature": rows(layout.CURVATURE), "eigenvectors": vectors}


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[Path]:
    """Run the command line from ``path`` (contextlib.chdir needs Python 3.11)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)
