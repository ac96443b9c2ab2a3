"""Figures an experiment folder gets after each evaluation (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from care_core.atomic import atomic_path


def _save(fig, path: Path) -> None:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path, title: str = "") -> None:
    """Counts with row-normalised shading (rows = truth), so small classes stay readable."""
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    shade = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = 1.0 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, int(m[i, j]), ha="center", va="center",
                    color="white" if shade[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="recall")
    _save(fig, path)


def plot_layer_weights(weights: Sequence[float], path, title: str = "") -> None:
    w = np.asarray(weights, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(w)), 3))
    ax.bar(range(len(w)), w, color="tab:blue")
    ax.axhline(1 / len(w), color="gray", lw=0.8, ls="--", label="uniform")
    ax.set_xticks(range(len(w)))
    ax.set_xlabel("layer (0 = conv front end)")
    ax.set_ylabel("softmax weight")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
