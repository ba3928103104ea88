"""The evaluate stage's figures as PNG files: `dvc plots show` embeds them as images, so they show offline (the
Vega templates it would otherwise render load their scripts from a CDN), and MLflow keeps them as artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.labels import LABELS


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    # No version stamp in the file: the same figures give the same bytes whatever matplotlib wrote them, so
    # `dvc repro --force` leaves dvc.lock unchanged.
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    _pyplot().close(fig)


def plot_confusion(matrix: list[list[int]], path: Path) -> None:
    """The test confusion matrix, row-normalised colours with the counts written in."""
    plt = _pyplot()
    counts = np.array(matrix)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set(xlabel="predicted", ylabel="actual", title="test confusion matrix (row-normalised, counts)")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    _save(fig, path)


def plot_reliability(rows: list[dict[str, Any]], path: Path) -> None:
    """Reliability diagram: accuracy against mean confidence per confidence bin, before and after temperature
    scaling (`rows` as the evaluate stage's reliability table: calibration, confidence, accuracy, count)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for calibration, marker, colour in (("before", "o", "tab:red"), ("after", "s", "tab:blue")):
        mine = [r for r in rows if r["calibration"] == calibration]
        sizes = [20 + 180 * r["count"] / max(sum(m["count"] for m in mine), 1) for r in mine]
        ax.plot([r["confidence"] for r in mine], [r["accuracy"] for r in mine], color=colour, linewidth=1, alpha=0.6)
        ax.scatter([r["confidence"] for r in mine], [r["accuracy"] for r in mine], s=sizes, marker=marker, color=colour,
                   alpha=0.8, label=f"{calibration} temperature scaling")  # fmt: skip
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence in bin", ylabel="accuracy in bin",
           title="reliability diagram (test split; marker area: faces in bin)")  # fmt: skip
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    _save(fig, path)
