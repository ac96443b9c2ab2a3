"""Trained probes on the demo corpus, shared by the predict / extract / classifier / Hub tests.

Training goes through the stock runner (`care_superb.launcher.main`, what `run_downstream.py` runs)
in this process, a handful of steps, followed by its ``-m evaluate`` on test: the reference that
`care-superb predict` must reproduce. Built once per test session (memoised per upstream, since
several test modules need it) and read-only for the tests: a test that damages a file copies first.
The corpus and tiny CARE are conftest's session `demo_cafe`. A random tiny CARE gives nearly the same
pooled vector for every file, so its probe predicts one class: parity is also checked on `egemaps`,
whose features separate the demo emotions within a few steps.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import torch

# Few steps, with a large learning rate so that the egemaps probe's predictions differ between files.
STEPS = {"care": 2, "egemaps": 8}


@dataclass(frozen=True)
class DemoRun:
    base: Path
    manifest: Path  # prepared emotion_cafe folder
    audio: Path  # raw demo corpus
    care: Path  # tiny CARE upstream folder
    run: Path  # s3prl experiment folder (dev-best.ckpt, test_fold1_predictions.csv)


_RUNS: Dict[str, DemoRun] = {}


def overrides(manifest: Path, steps: int) -> str:
    return ",,".join([
        f"config.runner.total_steps={steps}", f"config.runner.eval_step={steps}", f"config.runner.save_step={steps}",
        "config.runner.log_step=1", "config.optimizer.lr=0.01", "config.downstream_expert.datarc.num_workers=0",
        "config.downstream_expert.datarc.batch_size=8", "config.downstream_expert.datarc.eval_batch_size=8",
        "config.downstream_expert.datarc.test_fold='fold1'",
        f"config.downstream_expert.datarc.manifest_dir='{manifest}'",
    ])


def train_and_evaluate(upstream: str, ckpt, manifest: Path, expdir: Path) -> None:
    """`run_downstream.py -m train` then `-m evaluate -e dev-best.ckpt`, in this process."""
    import sys

    from care_superb import launcher

    argv = ["-m", "train", "-u", upstream, "-d", "emotion_cafe", "-p", str(expdir), "-o", overrides(manifest, STEPS[upstream]),
            "--device", "cpu"]
    if ckpt:
        argv[4:4] = ["-k", str(ckpt)]
    import builtins

    # s3prl's main() replaces builtins.isinstance (a DDP workaround, one more wrapper per call) and
    # the tensor sharing strategy: both are put back so that later tests run unaffected.
    saved, isinstance_, sharing = list(sys.argv), builtins.isinstance, torch.multiprocessing.get_sharing_strategy()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        launcher.main(argv)
        launcher.main(["-m", "evaluate", "-e", str(expdir / "dev-best.ckpt"), "--device", "cpu"])
    finally:
        sys.argv = saved
        builtins.isinstance = isinstance_
        torch.multiprocessing.set_sharing_strategy(sharing)
        torch.set_num_threads(threads)


def demo_run(demo_cafe: Path, tmp_path_factory, upstream: str = "care") -> DemoRun:
    """`demo_cafe`: conftest's session corpus folder (demo/, data/emotion_cafe/, tiny_care/)."""
    if upstream not in _RUNS:
        manifest, care = demo_cafe / "data" / "emotion_cafe", demo_cafe / "tiny_care"
        expdir = tmp_path_factory.mktemp(f"share_{upstream}") / "exp"
        train_and_evaluate(upstream, care if upstream == "care" else None, manifest, expdir)
        _RUNS[upstream] = DemoRun(demo_cafe, manifest, demo_cafe / "demo", care, expdir)
    return _RUNS[upstream]


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst
