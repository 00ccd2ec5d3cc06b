"""The picture of loss-landscape slices: for each set of weights (e.g. a
run's start, middle and end), the 1-D loss and accuracy along d₁ and the
2-D loss contour over (d₁, d₂)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eoskeras.reports.plots import save_figure  # noqa: E402


def plot_landscapes(slices: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """``slices``: records ``{"label", "line": LandscapeSlice.record(), "plane": ...}``, one row each."""
    rows = len(slices)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.4 * rows), squeeze=False)
    for row, entry in zip(axes, slices):
        line, plane = entry["line"], entry["plane"]
        ax = row[0]
        ax.plot(line["alphas"], line["loss"], color="C0")
        ax.set(xlabel="α along d₁", ylabel="loss", title=f"{entry['label']}: 1-D slice")
        twin = ax.twinx()
        twin.plot(line["alphas"], line["accuracy"], color="C2", ls="--")
        twin.set_ylabel("accuracy", color="C2")
        ax = row[1]
        loss = np.asarray(plane["loss"], dtype=float)
        finite = loss[np.isfinite(loss)]
        levels = np.geomspace(max(finite.min(), 1e-12), finite.max(), 20) if finite.size and finite.min() > 0 \
            else 20
        contour = ax.contour(plane["alphas"], plane["betas"], loss.T, levels=levels, cmap="viridis")
        ax.clabel(contour, fontsize=6, fmt="%.3g")
        ax.plot([0], [0], "r+")
        ax.set(xlabel="α along d₁", ylabel="β along d₂", title=f"{entry['label']}: loss contour")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=100)
