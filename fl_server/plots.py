"""Plots of the stage-1 and stage-2 reports (PNG files, matplotlib's Agg backend)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

log = logging.getLogger(__name__)


def _scatter_with_diagonal(axis: Any, measured: list[float], predicted: list[float], title: str, unit: str) -> None:
    axis.scatter(measured, predicted, s=14)
    if measured:
        low = min(min(measured), min(predicted))
        high = max(max(measured), max(predicted))
        axis.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel(f"measured {unit}")
    axis.set_ylabel(f"predicted {unit}")


def plot_pretrain(report: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """Write predicted-vs-measured plots of the stage-1 surrogates (held-out samples)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    latency = report["surrogates"]["latency"]
    accuracy = report["surrogates"]["accuracy"]
    figure, axes = plt.subplots(1, 1 + len(latency), figsize=(4 * (1 + len(latency)), 3.6), squeeze=False)
    _scatter_with_diagonal(
        axes[0][0],
        accuracy["held_out_measured"],
        accuracy["held_out_predicted"],
        f"accuracy (tau {accuracy['kendall_tau']:.2f})",
        "accuracy",
    )
    for axis, (profile, quality) in zip(axes[0][1:], sorted(latency.items())):
        _scatter_with_diagonal(
            axis,
            quality["held_out_measured_ms"],
            quality["held_out_predicted_ms"],
            f"{profile} ({quality['within_10pct']:.0%} within ±10%)",
            "ms",
        )
    figure.tight_layout()
    path = folder / "surrogates_held_out.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]
