"""`care-superb export-classifier RUN --out DIR`: one shareable folder from an s3prl experiment.

The run's checkpoint pickles the optimizer and argparse args next to the weights; the export keeps
only what prediction needs, as JSON (config.json: task, labels or targets, upstream spec, layer
weights, probe sizes, audio rules, metrics) and tensors (model.safetensors), plus a model card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="care-superb export-classifier",
        description="Write a trained run (result/downstream/<exp>) as a classifier folder: config.json, "
                    "model.safetensors (probe + layer weights; --include-upstream adds the CARE weights) and a "
                    "README.md model card. Load it with EmotionClassifier.from_pretrained(DIR) or care-superb predict DIR.")
    p.add_argument("run", type=Path, help="s3prl experiment folder, or one of its .ckpt files")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--checkpoint", default="dev-best.ckpt", help="checkpoint in the run folder (default: dev-best.ckpt)")
    p.add_argument("--include-upstream", action="store_true",
                   help="embed the CARE upstream weights, so the folder needs nothing else")
    p.add_argument("--upstream-ckpt", help="upstream weights (path or Hub id) replacing the ones the run recorded")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    from care_superb.classifier import EmotionClassifier

    a = build_parser().parse_args(argv)
    try:
        clf = EmotionClassifier.from_run(a.run, checkpoint=a.checkpoint, upstream_ckpt=a.upstream_ckpt)
        out = clf.save_pretrained(a.out, include_upstream=a.include_upstream)
    except (ValueError, FileNotFoundError) as e:
        print(f"care-superb export-classifier: {e}", file=sys.stderr)
        raise SystemExit(2)
    cfg = clf.config
    print(f"wrote {out}: {cfg.task} {cfg.fold}, upstream {cfg.upstream.spec}"
          + (" (embedded)" if a.include_upstream else "") + f", {len(cfg.outputs)} outputs")
