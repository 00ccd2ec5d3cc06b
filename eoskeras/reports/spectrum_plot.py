"""The picture of an ``eoskeras spectrum`` result: the operator's top-k
against the Hessian's λ_max, and λ_max of each layer's block."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eoskeras.reports.plots import save_figure  # noqa: E402

NAMES = {"hessian": "Hessian", "ggn": "Gauss-Newton", "fisher": "empirical Fisher"}


def plot_spectrum(result: dict[str, Any], path: str | Path) -> Path:
    """Write the PNG for a spectrum record (``spectrum_<operator>.json``)."""
    name = NAMES[result["operator"]]
    layers = result.get("layers") or []
    fig, axes = plt.subplots(1, 2 if layers else 1, figsize=(10 if layers else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    values = result["eigenvalues"]
    ax.plot(range(1, len(values) + 1), values, "o-", label=f"{name} top-{len(values)}")
    if "hessian_lambda_max" in result:
        ax.axhline(result["hessian_lambda_max"], color="C3", ls="--",
                   label=f"Hessian λ_max (ratio {result['ratio_to_hessian']:.3f})")
    ax.set(xlabel="index", ylabel="eigenvalue", title=f"{name} spectrum")
    ax.legend(fontsize=8)
    if layers:
        ax = axes[0, 1]
        ax.barh([row["layer"] for row in layers][::-1], [row["lambda_max"] for row in layers][::-1], color="C1")
        ax.set(xlabel="λ_max of the layer's block", title=f"{name} restricted to each layer")
    return save_figure(fig, path)
