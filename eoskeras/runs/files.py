"""Crash-safe file writing for run directories.

Whole files are replaced atomically (write a temporary file, fsync, rename),
so a reader sees the old or the new version, never half of one. Metrics are
appended one complete line at a time and flushed, so a killed run leaves at
most one torn final line, which readers skip.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    """JSON text; NaN and infinities are written as JSON's NaN/Infinity tokens."""
    return json.dumps(value, default=_default, allow_nan=True)


class RunWriteError(OSError):
    """A run file could not be written (a full disk, a file-size limit). What
    was written before stays valid: whole files are replaced by rename,
    a torn metrics line is dropped on resume."""


@contextlib.contextmanager
def writing(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """Report a failed write of ``path`` as ``RunWriteError``, removing its temporary file."""
    try:
        yield
    except OSError as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise RunWriteError(f"cannot write {path}: {err}") from err


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp), open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, default=_default, allow_nan=True, indent=2) + "\n")


def _replace_binary(path: Path, write: Callable[[BinaryIO], None], *, sync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp), open(tmp, "wb") as f:
        write(f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Atomic (rename), without fsync: eigenvector files are large and frequent,
    and a lost one after a power cut costs a plot point, not the run."""
    _replace_binary(path, lambda f: np.save(f, array), sync=False)


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic and synced, like the result.json it belongs to (a file object
    keeps ``np.savez`` from appending ``.npz`` to the temporary name)."""
    _replace_binary(path, lambda f: np.savez(f, **arrays), sync=True)


def append_line(path: Path, line: str) -> None:
    """Append one complete line and flush it to the OS."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file, skipping a torn (unparsable) final line."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return rows


def keep_jsonl_until(path: Path, step: int) -> list[dict[str, Any]]:
    """Drop the rows after ``step`` from a JSON-lines file (atomic replace); the kept rows."""
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))
    return rows


class MetricsLog:
    """Per-step metrics as JSON lines and CSV, appended as training runs.

    The CSV's columns are fixed when the log is created (``columns``); keys
    missing from a row are left empty, so the file stays rectangular.
    """

    def __init__(self, jsonl: Path, csv_path: Path, columns: Iterable[str]) -> None:
        self.jsonl, self.csv_path, self.columns = jsonl, csv_path, list(columns)
        if not csv_path.exists():
            append_line(csv_path, ",".join(self.columns))
        else:
            header = csv_path.read_text(encoding="utf-8").splitlines()[0].split(",")
            self.columns = header

    def append(self, row: dict[str, Any]) -> None:
        append_line(self.jsonl, dumps(row))
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow([_cell(row.get(c)) for c in self.columns])
        append_line(self.csv_path, buffer.getvalue())

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.jsonl)

    def keep_until(self, step: int) -> None:
        """Drop rows after ``step`` (resuming from a checkpoint at ``step``),
        replacing both files atomically."""
        rows = keep_jsonl_until(self.jsonl, step)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in self.columns])
        atomic_write_text(self.csv_path, buffer.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value}"
