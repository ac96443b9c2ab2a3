"""Aggregate finished cells into the paper's Table II layout: `table.md`, `table.csv` (+ plots).

Reads only the sweep folder: every ``results.json`` below it and, if present, the plan
``sweep.json`` the runner wrote (which cells were asked for). A table entry is mean ± std over all
folds × seeds of one (task, upstream). Nothing is dropped silently: cells that are missing, failed,
unreadable or that skipped utterances are listed under the table and counted in its cells.

Usage: ``care-superb table runs/ [--no-plots] [--strict]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from care_core import atomic
from sweep.cells import PLAN_NAME, ResultsError, iter_results

# Paper order (SPEC §5) and row names; unknown tasks follow, sorted.
TASK_ORDER = ("emotion_iemocap4", "emotion_iemocap6", "emotion_meld", "sentiment_mosi", "depression_daicwoz",
              "emotion_ravdess_song", "emotion_cafe", "emotion_emodb")
TASK_LABELS = {
    "emotion_iemocap4": "IEMOCAP-4", "emotion_iemocap6": "IEMOCAP-6", "emotion_meld": "MELD",
    "sentiment_mosi": "CMU-MOSI", "depression_daicwoz": "DAIC-WOZ", "emotion_ravdess_song": "RAVDESS-Song",
    "emotion_cafe": "CaFE", "emotion_emodb": "EmoDB", "emotion_mspimprov": "MSP-IMPROV",
}
UPSTREAM_ORDER = ("wavlm", "hubert", "care")  # the paper's column order; others after, in plan order


@dataclass(frozen=True)
class TableConfig:
    """How numbers are shown. `ddof=1`: the sample std over folds × seeds (what "± std over runs" means
    for a handful of runs); `percent` scales classification metrics in [0, 1] to %."""

    classification_metrics: Tuple[str, ...] = ("weighted_f1", "uar")
    metric_labels: Tuple[str, ...] = ("WF1", "UAR")
    regression_metrics: Tuple[str, ...] = ("ccc_valence", "ccc_arousal", "ccc_dominance")
    regression_labels: Tuple[str, ...] = ("CCC V", "CCC A", "CCC D")
    ddof: int = 1
    percent_digits: int = 1
    ccc_digits: int = 3


@dataclass
class Entry:
    """All finished cells of one (task, upstream)."""

    values: Dict[str, List[float]] = field(default_factory=lambda: defaultdict(list))
    n: int = 0
    expected: Optional[int] = None
    paths: set = field(default_factory=set)
    layer_weights: List[List[float]] = field(default_factory=list)
    skipped_utterances: int = 0


def mean_std(values: Sequence[float], ddof: int = 1) -> Tuple[float, float]:
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = sum(values) / n
    if n - ddof <= 0:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - ddof)
    return mean, math.sqrt(var)


@dataclass
class Collected:
    entries: Dict[Tuple[str, str], Entry]
    tasks: List[str]
    upstreams: List[str]
    labels: Dict[str, str]
    kinds: Dict[str, str]
    problems: List[str]


def _task_sort_key(task: str) -> Tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def collect(out: Path) -> Collected:
    """Group finished cells by (task, upstream) and list every problem found on the way."""
    out = Path(out)
    plan = None
    plan_path = out / PLAN_NAME
    problems: List[str] = []
    if plan_path.is_file():
        try:
            plan = json.loads(plan_path.read_text())
        except json.JSONDecodeError as e:
            problems.append(f"{plan_path}: unreadable plan ({e}); completeness not checked")
    entries: Dict[Tuple[str, str], Entry] = defaultdict(Entry)
    labels: Dict[str, str] = {}
    kinds: Dict[str, str] = {}
    seen: Dict[Tuple, Path] = {}
    for path, data in iter_results(out):
        if isinstance(data, ResultsError):
            problems.append(f"unreadable: {data}")
            continue
        if data["status"] != "done":
            problems.append(f"{data['status']}: {path.parent} ({data.get('error', 'no error text')})")
            continue
        key = data["upstream"]["key"]
        ident = (data["task"], key, data["fold"], data["seed"])
        if ident in seen:
            problems.append(f"duplicate cell {ident}: {seen[ident]} and {path}; the second is ignored")
            continue
        seen[ident] = path
        labels.setdefault(key, data["upstream"].get("label") or key)
        kinds[data["task"]] = data.get("task_kind", "classification")
        e = entries[(data["task"], key)]
        e.n += 1
        for name, value in data["metrics"]["test"].items():
            e.values[name].append(float(value))
        if data.get("layer_weights"):
            e.layer_weights.append([float(w) for w in data["layer_weights"]])
        skipped = data.get("skipped_utterances") or []
        if skipped:
            e.skipped_utterances += len(skipped)
            problems.append(f"{path.parent}: {len(skipped)} utterance(s) skipped (upstream failed on them): "
                            f"{', '.join(map(str, skipped[:5]))}{' ...' if len(skipped) > 5 else ''}")
    plan_upstreams: List[str] = []
    if plan is not None:
        expected: Dict[Tuple[str, str], int] = defaultdict(int)
        for cell in plan.get("cells", []):
            expected[(cell["task"], cell["upstream"])] += 1
        for u in plan.get("upstreams", []):
            labels.setdefault(u["key"], u.get("label") or u["key"])
            plan_upstreams.append(u["key"])
        for t, k in plan.get("task_kinds", {}).items():
            kinds.setdefault(t, k)
        for (task, key), n in expected.items():
            e = entries[(task, key)]
            e.expected = n
            if e.n < n:
                problems.append(f"incomplete: {task} / {labels.get(key, key)}: {e.n} of {n} cells finished")
    by_label: Dict[str, List[str]] = defaultdict(list)
    for k, lab in labels.items():
        by_label[lab].append(k)
    for lab, ks in by_label.items():
        if len(ks) > 1:  # two CARE checkpoints: columns must say which is which
            for k in ks:
                labels[k] = f"{lab} [{k}]"
    tasks = sorted({t for t, _ in entries}, key=_task_sort_key)
    keys = {k for _, k in entries}
    order = [k for k in plan_upstreams if k in keys]
    rest = sorted(keys - set(order), key=lambda k: (next((i for i, p in enumerate(UPSTREAM_ORDER)
                                                         if k == p or k.startswith(p + "-")), len(UPSTREAM_ORDER)), k))
    upstreams = order + rest if order else rest
    return Collected(dict(entries), tasks, upstreams, labels, kinds, problems)


def _fmt(mean: float, std: float, digits: int, scale: float) -> str:
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _cell_text(e: Optional[Entry], metric: str, cfg: TableConfig, digits: int, scale: float) -> str:
    if e is None or not e.values.get(metric):
        return "—"
    m, s = mean_std(e.values[metric], cfg.ddof)
    text = _fmt(m, s, digits, scale)
    if e.expected is not None and e.n < e.expected:
        text += f" ({e.n}/{e.expected})"
    return text


def build_rows(c: Collected, cfg: TableConfig = TableConfig()) -> Dict[str, Any]:
    """The numbers behind both files: per-task rows, the average row and the regression rows."""
    cls_tasks = [t for t in c.tasks if c.kinds.get(t, "classification") == "classification"]
    reg_tasks = [t for t in c.tasks if c.kinds.get(t) == "regression"]

    def task_row(t: str, metrics: Sequence[str]) -> Dict[str, Any]:
        row = {"task": t, "label": TASK_LABELS.get(t, t), "cells": {}}
        for u in c.upstreams:
            e = c.entries.get((t, u))
            for metric in metrics:
                if e is not None and e.values.get(metric):
                    m, s = mean_std(e.values[metric], cfg.ddof)
                    row["cells"][(u, metric)] = (m, s, e.n, e.expected)
        return row

    rows = [task_row(t, cfg.classification_metrics) for t in cls_tasks]
    # The average compares upstreams only over tasks every upstream finished completely.
    complete = [t for t in cls_tasks
                if all((c.entries.get((t, u)) is not None
                        and (c.entries[(t, u)].expected is None or c.entries[(t, u)].n >= c.entries[(t, u)].expected)
                        and all(c.entries[(t, u)].values.get(m) for m in cfg.classification_metrics))
                       for u in c.upstreams)]
    average = {}
    for u in c.upstreams:
        for metric in cfg.classification_metrics:
            vals = [mean_std(c.entries[(t, u)].values[metric], cfg.ddof)[0] for t in complete]
            if vals:
                average[(u, metric)] = sum(vals) / len(vals)
    reg_rows = [task_row(t, cfg.regression_metrics) for t in reg_tasks]
    return {"rows": rows, "average": average, "average_tasks": complete, "n_cls_tasks": len(cls_tasks),
            "reg_rows": reg_rows}


def render_markdown(c: Collected, cfg: TableConfig = TableConfig()) -> str:
    b = build_rows(c, cfg)
    lines = ["# Probe results", ""]
    if b["rows"]:
        lines.append("Weighted F1 and UAR (%) on the test split, mean ± std over folds × seeds "
                     f"(std with ddof={cfg.ddof}).")
        lines.append("")
        header = ["task"] + [f"{c.labels[u]} {ml}" for u in c.upstreams for ml in cfg.metric_labels]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in b["rows"]:
            cells = []
            for u in c.upstreams:
                for metric in cfg.classification_metrics:
                    cells.append(_cell_text(c.entries.get((row["task"], u)), metric, cfg, cfg.percent_digits, 100.0))
            lines.append("| " + " | ".join([row["label"]] + cells) + " |")
        n_avg, n_all = len(b["average_tasks"]), b["n_cls_tasks"]
        avg_label = "average" if n_avg == n_all else f"average ({n_avg} of {n_all} tasks)"
        avg_cells = []
        for u in c.upstreams:
            for metric in cfg.classification_metrics:
                v = b["average"].get((u, metric))
                avg_cells.append("—" if v is None else f"{v * 100:.{cfg.percent_digits}f}")
        lines.append("| " + " | ".join([avg_label] + avg_cells) + " |")
        lines.append("")
    if b["reg_rows"]:
        lines.append("CCC on the test split, mean ± std over folds × seeds.")
        lines.append("")
        header = ["task"] + [f"{c.labels[u]} {ml}" for u in c.upstreams for ml in cfg.regression_labels]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in b["reg_rows"]:
            cells = [_cell_text(c.entries.get((row["task"], u)), m, cfg, cfg.ccc_digits, 1.0)
                     for u in c.upstreams for m in cfg.regression_metrics]
            lines.append("| " + " | ".join([row["label"]] + cells) + " |")
        lines.append("")
    counts = [f"{TASK_LABELS.get(t, t)} / {c.labels[u]}: {c.entries[(t, u)].n} cells"
              for t in c.tasks for u in c.upstreams if (t, u) in c.entries and c.entries[(t, u)].n]
    if counts:
        lines.append("Cells per entry: " + "; ".join(counts) + ".")
        lines.append("")
    if c.problems:
        lines.append("## Problems (not in the numbers above)")
        lines.append("")
        lines += [f"- {p}" for p in c.problems]
        lines.append("")
    return "\n".join(lines)


def render_csv(c: Collected, cfg: TableConfig = TableConfig()) -> str:
    """One row per task (+ average), a mean/std/n column group per upstream and metric; raw fractions."""
    b = build_rows(c, cfg)
    metrics = list(cfg.classification_metrics) + list(cfg.regression_metrics)
    header = ["task"]
    for u in c.upstreams:
        for m in metrics:
            header += [f"{u}:{m}:mean", f"{u}:{m}:std", f"{u}:{m}:n"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in b["rows"] + b["reg_rows"]:
        out = [row["task"]]
        for u in c.upstreams:
            for m in metrics:
                v = row["cells"].get((u, m))
                out += ["", "", ""] if v is None else [f"{v[0]:.6f}", f"{v[1]:.6f}", str(v[2])]
        w.writerow(out)
    if b["rows"]:
        out = ["average"]
        for u in c.upstreams:
            for m in metrics:
                v = b["average"].get((u, m))
                out += ["", "", ""] if v is None else [f"{v:.6f}", "", str(len(b["average_tasks"]))]
        w.writerow(out)
    return buf.getvalue()


def write_table(out: Path, cfg: TableConfig = TableConfig(), plots: bool = True) -> Collected:

    out = Path(out)
    c = collect(out)
    atomic.write_text(out / "table.md", render_markdown(c, cfg))
    atomic.write_text(out / "table.csv", render_csv(c, cfg))
    if plots and c.entries:
        try:
            from sweep.plots import write_plots

            write_plots(c, out, cfg)
        except ImportError as e:  # matplotlib is optional for the numbers
            c.problems.append(f"plots skipped: {e}")
    return c


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="care-superb table", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="sweep folder (holds <task>/<upstream>/<fold>/seed<k>/results.json)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 when any cell is missing, failed or unreadable")
    args = p.parse_args(argv)
    if not args.out.is_dir():
        raise SystemExit(f"care-superb table: {args.out} is not a folder")
    c = write_table(args.out, plots=not args.no_plots)
    print(f"wrote {args.out / 'table.md'} and {args.out / 'table.csv'} "
          f"({sum(e.n for e in c.entries.values())} cells, {len(c.tasks)} tasks, {len(c.upstreams)} upstreams)")
    for p_ in c.problems:
        print(f"warning: {p_}", file=sys.stderr)
    if args.strict and c.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
