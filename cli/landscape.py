"""``eoskeras landscape``: loss-landscape slices of a run at its start,
middle and end, or of a saved model."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from eoskeras.cli.console import console, emit_json, fail
from eoskeras.cli.spectrum import latest_checkpoint, load_saved_model, prepare_run, restore_weights, with_data
from eoskeras.runs import layout


def _slices(oracle, directions: str, span: float, points: int, seed: int) -> dict[str, Any]:
    import eoskeras

    if directions == "eig":
        vectors, eigenvalues = eoskeras.eigen_directions(oracle, 2, seed=seed)
    else:
        vectors, eigenvalues = eoskeras.random_directions(oracle, 2, seed=seed), None
    line = eoskeras.landscape_slice(oracle, vectors[:1], span=span, points=points, label=directions,
                                    eigenvalues=eigenvalues)
    plane = eoskeras.landscape_slice(oracle, vectors, span=span, points=points, label=directions,
                                     eigenvalues=eigenvalues)
    return {"line": line.record(), "plane": plane.record()}


def _run_weights(run_dir: Path) -> list[tuple[str, int, str | None]]:
    """(label, step, checkpoint prefix or None for the initial weights) for start, middle, end."""
    from eoskeras.runs.checkpoint import milestone_prefixes, milestone_step

    latest = latest_checkpoint(run_dir)
    end = int(latest.rsplit("-", 1)[1])
    points = [("start", 0, None)]
    milestones = [p for p in milestone_prefixes(run_dir / layout.CHECKPOINTS) if 0 < milestone_step(p) < end]
    if milestones:
        middle = min(milestones, key=lambda p: abs(milestone_step(p) - end / 2))
        points.append(("middle", milestone_step(middle), str(middle)))
    points.append(("end", end, latest))
    return points


def landscape_command(source: str, *, directions: str, span: float, points: int, examples: int, dataset: str,
                      loss: str, out: str | None, seed: int, as_json: bool) -> int:
    from eoskeras.data import DataUnavailableError
    from eoskeras.reports.landscape_plot import plot_landscapes
    from eoskeras.runs.files import atomic_write_json

    path = Path(source)
    entries = []
    try:
        if path.is_dir():
            prepared = prepare_run(path)
            out_dir, title = Path(out) if out else path, f"{path.name}: {directions} directions"
            for label, step, prefix in _run_weights(path):
                if prefix is not None:
                    restore_weights(prepared.network, prefix, path)
                _require_finite(prepared.oracle, label)
                entries.append({"label": f"{label} (step {step})", "step": step,
                                **_slices(prepared.oracle, directions, span, points, seed)})
        elif path.is_file():
            oracle = with_data(load_saved_model(source), dataset, examples, loss)
            out_dir, title = Path(out or f"{path.stem}_landscape"), f"{path.name}: {directions} directions"
            _require_finite(oracle, path.name)
            entries.append({"label": path.name, **_slices(oracle, directions, span, points, seed)})
        else:
            fail(f"{source}: no such run directory or saved model", 2)
    except DataUnavailableError as err:
        fail(str(err), 1)
    record = {"source": str(source), "directions": directions, "span": span, "points": points, "slices": entries}
    json_path = out_dir / layout.LANDSCAPE / f"landscape_{directions}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(json_path, record)
    png = plot_landscapes(entries, out_dir / layout.PLOTS / f"landscape_{directions}.png", title)
    if as_json:
        emit_json(record)
        return 0
    out_console = console()
    for entry in entries:
        line = entry["line"]
        centre = len(line["loss"]) // 2
        curvature = ""
        if entry["line"].get("eigenvalues"):
            curvature = f", lambda_1 {entry['line']['eigenvalues'][0]:.4g}"
        out_console.print(f"{entry['label']}: loss {line['loss'][centre]:.4g}, accuracy {line['accuracy'][centre]:.3f}"
                          f"{curvature}; loss along d1 from {min(line['loss']):.4g} to {max(line['loss']):.4g}")
    out_console.print(f"wrote {json_path} and {png}")
    return 0


def _require_finite(oracle, label: str) -> None:
    if not math.isfinite(oracle.loss()):
        fail(f"{label}: the loss is not finite there (the run diverged?), so there is no landscape to slice", 1)
