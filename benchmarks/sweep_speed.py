#!/usr/bin/env python
"""Wall time of the stock runner vs the sweep's fast path, 5 folds x 2 seeds on the demo corpus.

Both sweeps start from nothing (the fast one includes building its feature cache) and run the
same cells with the same overrides; the script prints both times, their ratio (goal >= 20x), and
how far the two sweeps' test metrics are apart, cell by cell (they should be equal: see
`tests/test_sweep_parity.py`).

    python benchmarks/sweep_speed.py --work /tmp/sweep_speed [--upstream care:<ckpt>] [--steps N]

Without --upstream a tiny random CARE is written and used (CPU-friendly; for plumbing and timing
only). --steps shortens training (default: the task config's 50 epochs); with fewer steps the
stock runner's fixed costs (two process starts per cell) weigh more and the ratio changes, so the
printout states the settings it ran with.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/sweep_speed")
    p.add_argument("--upstream", help="s3prl hub name[:ckpt] (default: a tiny random CARE written to --work)")
    p.add_argument("--actors", type=int, default=12)
    p.add_argument("--sentences", type=int, default=6, help="demo sentences per emotion and intensity (1-6)")
    p.add_argument("--steps", type=int, help="runner.total_steps (default: the task config's)")
    p.add_argument("--eval-step", type=int, help="runner.eval_step (default: the task config's)")
    p.add_argument("-o", "--override", action="append", default=[], help="extra s3prl override for both sweeps")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--device", default=None, help="cpu or cuda:0 (default: cuda:0 if available)")
    a = p.parse_args(argv)

    import torch

    from care_upstream.config import CareConfig
    from care_upstream.model import CARE
    from downstream_tasks.demo_corpus import DemoConfig, write_demo_corpus
    from downstream_tasks.prepare import prepare_task
    from sweep.runner import SweepConfig, run_sweep

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    device = a.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    corpus = work / f"demo_{a.actors}x{a.sentences}"
    data = work / f"data_{a.actors}x{a.sentences}"
    if not (data / "emotion_cafe" / "manifest.csv").is_file():
        write_demo_corpus(corpus, cfg=DemoConfig(sample_rate=16000, n_actors=a.actors, n_sentences=a.sentences))
        prepare_task("emotion_cafe", corpus, data / "emotion_cafe", progress=False)
    upstream = a.upstream
    if upstream is None:
        ckpt = work / "tiny_care"
        if not (ckpt / "config.json").is_file():
            torch.manual_seed(0)
            CARE(CareConfig.tiny()).save_pretrained(ckpt)
        upstream = f"care:{ckpt}"
    overrides = []
    if a.steps:
        overrides.append(f"config.runner.total_steps={a.steps}")
    if a.eval_step:
        overrides += [f"config.runner.eval_step={a.eval_step}", f"config.runner.save_step={a.eval_step}"]
    overrides += a.override
    folds = [f"fold{k + 1}" for k in range(a.folds)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    common = dict(tasks=["emotion_cafe"], upstreams=[upstream], seeds=a.seeds, folds=folds, data=str(data),
                  overrides=overrides, devices=[device], jobs=a.jobs, plots=False)
    times = {}
    outs = {}
    for name, extra in (("fast", {}), ("stock", {"stock": True})):
        out = work / f"runs_{name}_{stamp}"
        outs[name] = out
        t0 = time.time()
        summary = run_sweep(SweepConfig(out=str(out), cache=str(out / "cache"), **common, **extra))
        times[name] = time.time() - t0
        if summary["failed"] or summary.get("refused"):
            raise SystemExit(f"{name} sweep had failed or refused cells: {summary['failed'] or summary['refused']}")

    deltas = []
    for f_path in sorted(outs["fast"].glob("*/*/*/seed*/results.json")):
        s_path = outs["stock"] / f_path.relative_to(outs["fast"])
        f, s = json.loads(f_path.read_text()), json.loads(s_path.read_text())
        deltas.append({k: abs(f["metrics"]["test"][k] - s["metrics"]["test"][k])
                       for k in ("weighted_f1", "uar", "accuracy", "loss")})
    n_cells = len(deltas)
    report = {
        "device": device, "upstream": upstream, "cells": n_cells, "folds": a.folds, "seeds": a.seeds,
        "utterances": sum(1 for _ in open(data / "emotion_cafe" / "manifest.csv")) - 1,
        "overrides": overrides, "torch_threads": torch.get_num_threads(),
        "stock_s": round(times["stock"], 1), "fast_s": round(times["fast"], 1),
        "ratio": round(times["stock"] / times["fast"], 1),
        "max_abs_delta": {k: max(d[k] for d in deltas) for k in deltas[0]} if deltas else {},
        "cells_with_identical_test_metrics": sum(all(d[k] == 0 for k in ("weighted_f1", "uar", "accuracy"))
                                                 for d in deltas),
    }
    print(json.dumps(report, indent=2))
    print(f"stock {times['stock']:.1f} s / fast {times['fast']:.1f} s = {report['ratio']}x "
          f"({n_cells} cells on {device}; goal >= 20x)")
    return report


if __name__ == "__main__":
    main()
