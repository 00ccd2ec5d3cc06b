"""``eoskeras launch``: a multi-worker run on this machine, one process per worker.

Each worker is ``python -m eoskeras ARGS --strategy multi_worker`` with its own
``TF_CONFIG`` (a cluster of ``127.0.0.1`` ports picked free). Worker 0 is the
chief: its output is shown and it alone writes the run directory. On a real
cluster, start the same command on every host with a ``TF_CONFIG`` naming all
hosts (README, "Several machines").
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(workers: int) -> list[dict[str, Any]]:
    """One ``TF_CONFIG`` per worker of a loopback cluster; worker 0 is the chief."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(workers)]


def worker_command(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "eoskeras", *args, "--strategy", "multi_worker"]


def launch(workers: int, args: tuple[str, ...], *, grace: float = 30.0) -> int:
    """Run the workers; when one fails, stop the others. The exit code is the
    chief's, or the first failure's when the chief succeeded."""
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers - 1)]
    processes = []
    for config, log in zip(tf_configs(workers), [None, *logs]):
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        processes.append(subprocess.Popen(worker_command(args), env=env, stdout=log, stderr=log))
    # Ctrl-C reaches every worker (one process group); each checkpoints and stops.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        failed_at = None
        while any(p.poll() is None for p in processes):
            if failed_at is None and any(p.poll() not in (None, 0, 130) for p in processes):
                failed_at = time.monotonic()  # the others end on the lost peer, or are stopped after a grace
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for p in processes:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    codes = [p.returncode for p in processes]
    for i, (code, log) in enumerate(zip(codes[1:], logs), start=1):
        if code != 0:
            log.seek(0)
            tail = log.read()[-2000:]
            print(f"worker {i} exited with {code}:\n{tail}", file=sys.stderr)
        log.close()
    return codes[0] or next((c for c in codes if c), 0)
