"""Make s3prl's own runner see the CARE upstreams and this project's downstream tasks, without editing s3prl.

s3prl finds an upstream as an attribute of `s3prl.hub` (its `hub.py` star-imports every
`upstream/*/hubconf.py`) and a downstream task as the module `s3prl.downstream.<task>.expert`. So
registration is two small moves at run time: copy the public callables of `care_upstream.hubconf`
onto `s3prl.hub`, and add the folder `downstream_tasks/` to the package path of `s3prl.downstream`.
Every stock upstream and task keeps working because nothing of s3prl is replaced.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Dict, List

import torch

TASKS_DIR = Path(__file__).resolve().parent.parent / "downstream_tasks"


def project_tasks() -> List[str]:
    """Task names this project provides: every `downstream_tasks/<name>/` holding a config.yaml."""
    return sorted(p.parent.name for p in TASKS_DIR.glob("*/config.yaml"))


def care_hub_entries() -> Dict[str, object]:
    """The public callables of `care_upstream.hubconf`, as s3prl's star-import would collect them."""
    from care_upstream import hubconf

    return {
        name: obj
        for name, obj in vars(hubconf).items()
        if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == hubconf.__name__
    }


def allow_s3prl_checkpoints() -> None:
    """Let `torch.load(weights_only=True)` (torch>=2.6's default) read s3prl's experiment checkpoints.

    s3prl's runner saves `argparse.Namespace` under "Args"; allow-listing that one class keeps
    resume (`-e`) and evaluation working without unpickling anything that can run code.
    """
    torch.serialization.add_safe_globals([argparse.Namespace])


def register() -> None:
    """Register CARE upstreams on `s3prl.hub` and this project's tasks under `s3prl.downstream`. Idempotent."""
    from s3prl import hub
    import s3prl.downstream as s3prl_downstream

    for name, fn in care_hub_entries().items():
        setattr(hub, name, fn)
    tasks_dir = str(TASKS_DIR)
    if tasks_dir not in list(s3prl_downstream.__path__):
        s3prl_downstream.__path__.append(tasks_dir)
    allow_s3prl_checkpoints()
