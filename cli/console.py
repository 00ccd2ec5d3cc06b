"""What the commands share: the console, failing with an exit code, strict
JSON, the data options. It imports no other ``cli`` module.

Exit codes: 0 success (a diverged run is a result, not a failure), 1 a
runtime failure (data unavailable, damaged checkpoint), 2 bad input (a
recipe, an override, a run directory that exists), 130 interrupted.
"""
from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

INTERRUPTED = 130


def fail(message: str, code: int) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet, stderr=False)


def emit_json(value: Any) -> None:
    """Strict JSON on stdout: NaN and infinities, which JSON lacks, become null."""
    from eoskeras.reports.formatting import json_ready

    click.echo(json.dumps(json_ready(value), indent=2, default=str, allow_nan=False))


def require_data(dataset: str, data_dir: str | None, download: bool) -> None:
    """Refuse at once, before TensorFlow is imported, when the data is not on disk."""
    from eoskeras.data import DataSpec, DataUnavailableError, check_available

    try:
        check_available(DataSpec(dataset=dataset, data_dir=data_dir, download=download))
    except DataUnavailableError as err:
        fail(str(err), 1)


def data_overrides(data_dir: str | None, download: bool) -> tuple[str, ...]:
    """``--data-dir``/``--download`` as recipe overrides."""
    # A JSON string is a YAML scalar: the path reads back unchanged, whatever its characters.
    return (f"data.data_dir={json.dumps(data_dir)}",) * bool(data_dir) + ("data.download=true",) * download
