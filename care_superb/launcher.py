"""Fill s3prl's path-dependent defaults, register CARE, and hand the command line to s3prl's runner."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import torch

from care_superb.s3prl_registry import TASKS_DIR, register


def _flag_value(argv: List[str], short: str, long: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
    return None


def _has_flag(argv: List[str], short: str, long: str) -> bool:
    return any(a in (short, long) or a.startswith(long + "=") for a in argv)


def default_config(task: str) -> Optional[Path]:
    """Where the config of `task` lives: this project's tasks first, then s3prl's stock tasks."""
    ours = TASKS_DIR / task / "config.yaml"
    if ours.is_file():
        return ours
    import s3prl

    stock = Path(s3prl.__file__).parent / "downstream" / task / "config.yaml"
    return stock if stock.is_file() else None


def complete_args(argv: List[str]) -> List[str]:
    """argv with `-c` and `--device` filled in where s3prl's own defaults would not work here."""
    argv = list(argv)
    task = _flag_value(argv, "-d", "--downstream")
    if task and not _has_flag(argv, "-e", "--past_exp") and not _has_flag(argv, "-c", "--config"):
        config = default_config(task)
        if config is not None:
            print(f"[care-superb] - config: {config}", file=sys.stderr)
            argv += ["-c", str(config)]
    if not _has_flag(argv, "--device", "--device") and not torch.cuda.is_available():
        print("[care-superb] - no CUDA device: adding --device cpu", file=sys.stderr)
        argv += ["--device", "cpu"]
    return argv


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    register()
    from s3prl import run_downstream

    sys.argv = ["run_downstream.py"] + complete_args(argv)
    run_downstream.main()
