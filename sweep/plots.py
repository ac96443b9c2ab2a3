"""Figures for a sweep folder: per-task bars with error bars, and layer-weight heat maps.

Each bar group carries a dashed line at what a probe that learnt nothing scores (the table's
reference row: majority-class weighted F1, chance UAR, CCC 0), so a bar at chance reads as such.

The heat map shows the softmax layer weights the probe learned (mean over folds × seeds) for every
task of one upstream: where in the network each task finds its information (the paper's Fig. 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:  # pragma: no cover
    from sweep.table import Collected, TableConfig


def write_plots(c: "Collected", out: Path, cfg: "TableConfig") -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sweep.table import TASK_LABELS, reference_value, mean_std

    out = Path(out) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    metrics = list(cfg.classification_metrics) + list(cfg.regression_metrics)
    for metric in metrics:
        tasks = [t for t in c.tasks if any(c.entries.get((t, u)) and c.entries[(t, u)].values.get(metric)
                                           for u in c.upstreams)]
        if not tasks:
            continue
        scale = 1.0 if metric in cfg.regression_metrics else 100.0
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(tasks) * max(1, len(c.upstreams)) / 2), 3.5))
        width = 0.8 / max(1, len(c.upstreams))
        x = np.arange(len(tasks))
        for i, u in enumerate(c.upstreams):
            means, stds = [], []
            for t in tasks:
                e = c.entries.get((t, u))
                vals = e.values.get(metric) if e else None
                m, s = mean_std(vals, cfg.ddof) if vals else (float("nan"), 0.0)
                means.append(m * scale)
                stds.append(s * scale)
            ax.bar(x + (i - (len(c.upstreams) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
                   label=c.column(u))
        drawn = False
        for xi, t in zip(x, tasks):
            ref = reference_value(c, t, metric, cfg)
            if ref is None:
                continue
            ax.hlines(ref * scale, xi - 0.45, xi + 0.45, colors="black", linestyles="dashed", linewidth=1,
                      label=None if drawn else "chance / majority")
            drawn = True
        ax.set_xticks(x, [TASK_LABELS.get(t, t) for t in tasks], rotation=30, ha="right")
        ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / f"bars_{metric}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    for u in c.upstreams:
        tasks = [t for t in c.tasks if c.entries.get((t, u)) and c.entries[(t, u)].layer_weights]
        if not tasks:
            continue
        rows = [np.mean(np.asarray(c.entries[(t, u)].layer_weights), axis=0) for t in tasks]
        if len({len(r) for r in rows}) != 1:
            continue  # different layer counts cannot share one heat map
        mat = np.stack(rows)
        fig, ax = plt.subplots(figsize=(0.45 * mat.shape[1] + 2.5, 0.45 * len(tasks) + 1.5))
        im = ax.imshow(mat, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(tasks)), [TASK_LABELS.get(t, t) for t in tasks])
        ax.set_xticks(range(mat.shape[1]))
        ax.set_xlabel("layer")
        ax.set_title(f"layer weights: {c.labels[u]}")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        path = out / f"layer_weights_{u}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
