"""Aggregate finished cells into the paper's Table II layout: `table.md`, `table.csv` (+ plots).

Reads only the sweep folder: every ``results.json`` below it and, if present, the plan
``sweep.json`` the runner wrote (which cells were asked for). A table entry is mean ± std over all
folds × seeds of one (task, upstream), with a 95 % confidence interval of the mean and a paired test
against the reference upstream over the (fold, seed) cells both finished: a reader can see whether
"A beats B" holds, not only which number is larger. Under each task a reference row gives what a
probe that learnt nothing scores (train-majority weighted F1, chance UAR 1/K, CCC 0). Nothing is
dropped silently: cells that are missing, failed, unreadable, refused or that skipped utterances are
listed under the table and counted in its cells.

Usage: ``care-superb table runs/ [--reference <upstream>] [--no-plots] [--strict]``.
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

# The paper's Table II row order and names; unknown tasks follow, sorted.
TASK_ORDER = ("emotion_iemocap4", "emotion_iemocap6", "emotion_meld", "sentiment_mosi", "depression_daicwoz",
              "emotion_ravdess_song", "emotion_cafe", "emotion_emodb")
TASK_LABELS = {
    "emotion_iemocap4": "IEMOCAP-4", "emotion_iemocap6": "IEMOCAP-6", "emotion_meld": "MELD",
    "sentiment_mosi": "CMU-MOSI", "depression_daicwoz": "DAIC-WOZ", "emotion_ravdess_song": "RAVDESS-Song",
    "emotion_cafe": "CaFE", "emotion_emodb": "EmoDB", "emotion_mspimprov": "MSP-IMPROV",
}
UPSTREAM_ORDER = ("wavlm", "hubert", "care")  # the paper's column order; others after, in plan order


# Per-interview DAIC-WOZ scores (results.json "participant"): (block, metric) -> column label.
PARTICIPANT_METRICS = (("vote", "f1_depressed", "vote F1 (depressed)"), ("vote", "macro_f1", "vote macro F1"),
                       ("vote", "uar", "vote UAR"), ("mean_prob", "f1_depressed", "mean-prob F1 (depressed)"),
                       ("mean_prob", "macro_f1", "mean-prob macro F1"), ("mean_prob", "uar", "mean-prob UAR"))


@dataclass(frozen=True)
class TableConfig:
    """How numbers are shown. `ddof=1`: the sample std over folds × seeds (what "± std over runs" means
    for a handful of runs); `percent` scales classification metrics in [0, 1] to %. `alpha`: the
    level of the paired test's marker and of the confidence interval (1 - alpha)."""

    classification_metrics: Tuple[str, ...] = ("weighted_f1", "uar")
    metric_labels: Tuple[str, ...] = ("WF1", "UAR")
    regression_metrics: Tuple[str, ...] = ("ccc_valence", "ccc_arousal", "ccc_dominance")
    regression_labels: Tuple[str, ...] = ("CCC V", "CCC A", "CCC D")
    # what a probe that learnt nothing scores, per metric (keys of results.json "reference")
    reference_of: Tuple[Tuple[str, str], ...] = (("weighted_f1", "majority_weighted_f1"), ("uar", "chance_uar"),
                                                 ("accuracy", "majority_accuracy"))
    ddof: int = 1
    percent_digits: int = 1
    ccc_digits: int = 3
    alpha: float = 0.05


@dataclass
class Entry:
    """All finished cells of one (task, upstream)."""

    values: Dict[str, List[float]] = field(default_factory=lambda: defaultdict(list))
    n: int = 0
    expected: Optional[int] = None
    paths: set = field(default_factory=set)
    layer_weights: List[List[float]] = field(default_factory=list)
    skipped_utterances: int = 0
    by_cell: Dict[Tuple[str, int], Dict[str, float]] = field(default_factory=dict)  # (fold, seed) -> metrics
    reference: Dict[str, List[float]] = field(default_factory=lambda: defaultdict(list))  # metric -> per cell
    participant: Dict[str, List[float]] = field(default_factory=lambda: defaultdict(list))  # "vote:uar" -> ...
    n_participants: Optional[int] = None
    degenerate: bool = False


def mean_std(values: Sequence[float], ddof: int = 1) -> Tuple[float, float]:
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = sum(values) / n
    if n - ddof <= 0:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - ddof)
    return mean, math.sqrt(var)


def mean_ci(values: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """Student-t confidence interval of the mean over folds × seeds; None for a single value (n = 1
    says nothing about spread, and the table says n = 1 instead of "± 0.0")."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    mean, std = mean_std(values, ddof=1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def paired_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p over paired cells (the same fold and seed, hence the same test
    utterances and head seed). None with fewer than two pairs. With n pairs no difference can reach
    p < 2 / 2**n (n = 5: 0.0625), which the table's footnote says."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired_p: {len(a)} vs {len(b)} values")
    if len(a) < 2:
        return None
    if all(x == y for x, y in zip(a, b)):
        return 1.0  # identical cells: no evidence of a difference (scipy would divide by zero)
    return float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


@dataclass
class Collected:
    entries: Dict[Tuple[str, str], Entry]
    tasks: List[str]
    upstreams: List[str]
    labels: Dict[str, str]
    kinds: Dict[str, str]
    problems: List[str]
    reference: Optional[str] = None  # the upstream key the paired tests compare against

    def degenerate(self, u: str) -> bool:
        return any(e.degenerate for (_, k), e in self.entries.items() if k == u)

    def column(self, u: str) -> str:
        """The upstream's column label, marked ‡ when it ran with degenerate features."""
        return self.labels[u] + (" ‡" if self.degenerate(u) else "")

    def pairs(self, task: str, u: str, metric: str) -> Tuple[List[float], List[float]]:
        """(u's values, the reference's values) over the (fold, seed) cells both finished."""
        a, b = self.entries.get((task, u)), self.entries.get((task, self.reference or ""))
        if a is None or b is None:
            return [], []
        shared = sorted(k for k in a.by_cell if k in b.by_cell and metric in a.by_cell[k] and metric in b.by_cell[k])
        return [a.by_cell[k][metric] for k in shared], [b.by_cell[k][metric] for k in shared]

    def p_value(self, task: str, u: str, metric: str) -> Optional[float]:
        if u == self.reference:
            return None
        return paired_p(*self.pairs(task, u, metric))


def _task_sort_key(task: str) -> Tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def collect(out: Path, reference: Optional[str] = None) -> Collected:
    """Group finished cells by (task, upstream) and list every problem found on the way.

    `reference`: the upstream (key or label) the paired tests compare with; default the plan's
    (``--reference`` of the sweep), else the first column."""
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
        e.by_cell[(data["fold"], data["seed"])] = {k: float(v) for k, v in data["metrics"]["test"].items()}
        for name, value in data["metrics"]["test"].items():
            e.values[name].append(float(value))
        ref = data.get("reference") or {}
        for name, value in ref.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                e.reference[name].append(float(value))
            elif isinstance(value, dict):  # regression: {"mean_ccc": {target: 0.0}}
                for target, v in value.items():
                    if isinstance(v, (int, float)):
                        e.reference[f"{name}:{target}"].append(float(v))
        for block, scores in (data.get("participant") or {}).items():
            if isinstance(scores, dict):
                for name, value in scores.items():
                    e.participant[f"{block}:{name}"].append(float(value))
            elif block == "n_participants":
                e.n_participants = int(scores)
        if data.get("degenerate"):
            e.degenerate = True
        if data.get("layer_weights"):
            e.layer_weights.append([float(w) for w in data["layer_weights"]])
        skipped = data.get("skipped_utterances") or []
        if skipped:
            e.skipped_utterances += len(skipped)
            problems.append(f"{path.parent}: {len(skipped)} utterance(s) skipped (upstream failed on them): "
                            f"{', '.join(map(str, skipped[:5]))}{' ...' if len(skipped) > 5 else ''}")
    plan_upstreams: List[str] = []
    if plan is not None and not isinstance(plan, dict):
        problems.append(f"{plan_path}: not a JSON object; completeness not checked")
        plan = None
    if plan is not None:
        expected: Dict[Tuple[str, str], int] = defaultdict(int)
        for cell in plan.get("cells", []):
            expected[(cell["task"], cell["upstream"])] += 1
        for u in plan.get("upstreams", []):
            labels[u["key"]] = u.get("label") or u["key"]  # the latest sweep's names win
            plan_upstreams.append(u["key"])
        for msg in sorted(set((plan.get("refused") or {}).values())):
            problems.append(f"refused: {msg}")
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
    ref = reference if reference is not None else (plan or {}).get("reference")
    if reference is not None:
        match = [k for k in upstreams if reference in (k, labels.get(k))]
        if not match:
            raise ValueError(f"--reference {reference!r} is not an upstream of this sweep "
                             f"({', '.join(labels.get(k, k) for k in upstreams)})")
        ref = match[0]
    if ref not in upstreams:
        ref = upstreams[0] if upstreams else None
    return Collected(dict(entries), tasks, upstreams, labels, kinds, problems, ref)


def _fmt(values: Sequence[float], digits: int, scale: float, cfg: TableConfig) -> str:
    """``mean ± std [CI low, CI high]``, or ``mean (n = 1)`` for a single cell."""
    m, s = mean_std(values, cfg.ddof)
    ci = mean_ci(values, 1 - cfg.alpha)
    if ci is None:
        return f"{m * scale:.{digits}f} (n = 1)"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def _cell_text(c: Collected, task: str, u: str, metric: str, cfg: TableConfig, digits: int, scale: float) -> str:
    e = c.entries.get((task, u))
    if e is None or not e.values.get(metric):
        return "—"
    text = _fmt(e.values[metric], digits, scale, cfg)
    p = c.p_value(task, u, metric)
    if p is not None and p < cfg.alpha:
        text += " *"
    if e.expected is not None and e.n < e.expected:
        text += f" ({e.n}/{e.expected})"
    return text


def reference_value(c: Collected, task: str, metric: str, cfg: TableConfig) -> Optional[float]:
    """Mean over a task's cells of what a probe that learnt nothing scores on `metric` (the same data
    for every upstream; the first upstream with a reference block gives it)."""
    name = dict(cfg.reference_of).get(metric)
    if name is None and metric.startswith("ccc_"):
        name = f"mean_ccc:{metric[len('ccc_'):]}"
    for u in c.upstreams:
        e = c.entries.get((task, u))
        if e is not None and e.reference.get(name):
            vals = e.reference[name]
            return sum(vals) / len(vals)
    return None


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
    for row in rows:
        row["reference"] = {m: reference_value(c, row["task"], m, cfg) for m in cfg.classification_metrics}
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
    for row in reg_rows:
        row["reference"] = {m: reference_value(c, row["task"], m, cfg) for m in cfg.regression_metrics}
    return {"rows": rows, "average": average, "average_tasks": complete, "n_cls_tasks": len(cls_tasks),
            "reg_rows": reg_rows}


def _ref_text(v: Optional[float], digits: int, scale: float) -> str:
    return "—" if v is None else f"{v * scale:.{digits}f}"


def _participant_tasks(c: Collected) -> List[str]:
    return [t for t in c.tasks if any(c.entries.get((t, u)) and c.entries[(t, u)].participant for u in c.upstreams)]


def _metric_rows(c: Collected, cfg: TableConfig, rows, metrics, metric_labels, digits: int, scale: float,
                 reference_label: str) -> List[str]:
    """A markdown table: one row per task (mean ± std [CI] of each upstream's cells, with the significance
    marker) and under it the task's reference row (what a probe that learnt nothing scores)."""
    header = ["task"] + [f"{c.column(u)} {ml}" for u in c.upstreams for ml in metric_labels]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [_cell_text(c, row["task"], u, m, cfg, digits, scale) for u in c.upstreams for m in metrics]
        lines.append("| " + " | ".join([row["label"]] + cells) + " |")
        if any(v is not None for v in row["reference"].values()):
            ref = [_ref_text(row["reference"][m], digits, scale) for _ in c.upstreams for m in metrics]
            lines.append("| " + " | ".join([f"{row['label']} {reference_label}"] + ref) + " |")
    return lines


def render_markdown(c: Collected, cfg: TableConfig = TableConfig()) -> str:
    b = build_rows(c, cfg)
    lines = ["# Probe results", ""]
    ci = f"{round((1 - cfg.alpha) * 100)} % CI of the mean"
    if b["rows"]:
        lines.append(f"Weighted F1 and UAR (%) on the test split, mean ± std over folds × seeds (std with "
                     f"ddof={cfg.ddof}) [{ci}]. Under each task, what a probe that learnt nothing scores: "
                     "the train split's majority class (WF1) and chance (UAR = 1/K).")
        lines.append("")
        lines += _metric_rows(c, cfg, b["rows"], cfg.classification_metrics, cfg.metric_labels,
                              cfg.percent_digits, 100.0, "reference (majority / chance)")
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
        lines.append(f"CCC on the test split, mean ± std over folds × seeds [{ci}]; the reference row is the CCC "
                     "of always predicting the train mean (0).")
        lines.append("")
        lines += _metric_rows(c, cfg, b["reg_rows"], cfg.regression_metrics, cfg.regression_labels,
                              cfg.ccc_digits, 1.0, "reference (train mean)")
        lines.append("")
    for task in _participant_tasks(c):
        label = TASK_LABELS.get(task, task)
        lines.append(f"{label} per participant (%): one decision per interview from its segments' predictions, "
                     "by majority vote and by mean probability; WF1 is the segment-level weighted F1 above.")
        lines.append("")
        header = ["upstream", "segments WF1"] + [m[2] for m in PARTICIPANT_METRICS] + ["participants"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for u in c.upstreams:
            e = c.entries.get((task, u))
            if e is None:
                continue
            cells = [_fmt(e.values["weighted_f1"], cfg.percent_digits, 100.0, cfg) if e.values.get("weighted_f1")
                     else "—"]
            for block, metric, _ in PARTICIPANT_METRICS:
                vals = e.participant.get(f"{block}:{metric}")
                cells.append(_fmt(vals, cfg.percent_digits, 100.0, cfg) if vals else "—")
            cells.append("—" if e.n_participants is None else str(e.n_participants))
            lines.append("| " + " | ".join([c.column(u)] + cells) + " |")
        lines.append("")
        lines.append(f"Note: {label} has no labelled test split, so dev is both the set that selects the best "
                     "checkpoint and the set reported (as in the paper); its numbers are optimistic.")
        lines.append("")
    notes = []
    if c.reference is not None and len(c.upstreams) > 1:
        notes.append(f"\\* p < {cfg.alpha:g} against {c.labels[c.reference]}: two-sided Wilcoxon signed-rank test "
                     "over the (fold, seed) cells both finished (p-values in table.csv); with fewer than 6 pairs no "
                     "difference can reach p < 0.05.")
    if any(c.degenerate(u) for u in c.upstreams):
        notes.append("‡ pooled features are the same for every utterance (run with --allow-degenerate): the probe "
                     "can only learn the class prior, so numbers at the reference row are expected.")
    if notes:
        lines += notes + [""]
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
    """One row per task (+ its reference row, + average), a column group per upstream and metric: mean,
    std, n, the CI of the mean and the paired p against the reference upstream; raw fractions."""
    b = build_rows(c, cfg)
    metrics = list(cfg.classification_metrics) + list(cfg.regression_metrics)
    part = ({f"participant_{block}_{m}": f"{block}:{m}" for block, m, _ in PARTICIPANT_METRICS}
            if _participant_tasks(c) else {})
    fields = ("mean", "std", "n", "ci_low", "ci_high", "p")
    header = ["task"]
    for u in c.upstreams:
        for m in metrics + list(part):
            header += [f"{u}:{m}:{f}" for f in fields]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    blank = [""] * len(fields)

    def stats_of(task: str, u: str, m: str, vals: Optional[Sequence[float]]) -> List[str]:
        if not vals:
            return blank
        mean, std = mean_std(vals, cfg.ddof)
        ci = mean_ci(vals, 1 - cfg.alpha)
        p = c.p_value(task, u, m) if m in metrics else None
        return [f"{mean:.6f}", f"{std:.6f}" if len(vals) > 1 else "", str(len(vals)),
                "" if ci is None else f"{ci[0]:.6f}", "" if ci is None else f"{ci[1]:.6f}",
                "" if p is None else f"{p:.6g}"]

    for row in b["rows"] + b["reg_rows"]:
        out = [row["task"]]
        for u in c.upstreams:
            e = c.entries.get((row["task"], u))
            for m in metrics:
                out += stats_of(row["task"], u, m, e.values.get(m) if e else None)
            for name, key in part.items():
                out += stats_of(row["task"], u, name, e.participant.get(key) if e else None)
        w.writerow(out)
        if any(v is not None for v in row["reference"].values()):
            out = [f"{row['task']} (reference)"]
            for u in c.upstreams:
                for m in metrics + list(part):
                    v = row["reference"].get(m)
                    out += blank if v is None else [f"{v:.6f}", "", "", "", "", ""]
            w.writerow(out)
    if b["rows"]:
        out = ["average"]
        for u in c.upstreams:
            for m in metrics + list(part):
                v = b["average"].get((u, m))
                out += blank if v is None else [f"{v:.6f}", "", str(len(b["average_tasks"])), "", "", ""]
        w.writerow(out)
    return buf.getvalue()


def write_table(out: Path, cfg: TableConfig = TableConfig(), plots: bool = True,
                reference: Optional[str] = None) -> Collected:
    out = Path(out)
    c = collect(out, reference)
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
    p.add_argument("--reference", help="upstream (key or label) the paired tests compare with "
                                       "(default: the sweep's --reference, else the first column)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any cell is missing, failed or unreadable")
    args = p.parse_args(argv)
    if not args.out.is_dir():
        raise SystemExit(f"care-superb table: {args.out} is not a folder")
    try:
        c = write_table(args.out, plots=not args.no_plots, reference=args.reference)
    except ValueError as e:
        raise SystemExit(f"care-superb table: {e}") from None
    print(f"wrote {args.out / 'table.md'} and {args.out / 'table.csv'} "
          f"({sum(e.n for e in c.entries.values())} cells, {len(c.tasks)} tasks, {len(c.upstreams)} upstreams)")
    for p_ in c.problems:
        print(f"warning: {p_}", file=sys.stderr)
    if args.strict and c.problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
