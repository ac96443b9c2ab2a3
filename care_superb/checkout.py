"""Register CARE and this project's tasks into a user's own s3prl source checkout.

For an existing SUPERB set-up, where people run `cd s3prl/s3prl && python run_downstream.py ...`.
The files written are thin shims that import this installed package, so the checkout stays a plain
s3prl tree plus a few small files; running the command again changes nothing.

Written into `<checkout>/s3prl/`:
- `upstream/care/{__init__.py,hubconf.py}` and one line appended to `hub.py`;
- `downstream/<task>/{__init__.py,expert.py,config.yaml}` for each task of this project.

The shims only work when the checkout is the s3prl that Python imports. If another copy is imported
(usually the pip-installed one), the command says so and what to do, and exits with status 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import torch

from care_core import atomic
from care_superb.s3prl_registry import TASKS_DIR, project_tasks

HUB_LINE = "from s3prl.upstream.care.hubconf import *  # added by care-superb register-s3prl"
SHIM_HEADER = "# Written by `care-superb register-s3prl`: the code lives in the installed care-superb package.\n"


def find_package_dir(checkout: Path) -> Path:
    """The `s3prl` package folder inside a checkout (accepts the repo root or the package folder itself)."""
    checkout = Path(checkout).expanduser().resolve()
    for candidate in (checkout / "s3prl", checkout):
        if (candidate / "hub.py").is_file() and (candidate / "downstream").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{checkout}: not an s3prl checkout (expected s3prl/hub.py and s3prl/downstream/ under it)"
    )


def register_checkout(checkout: Path, tasks: Optional[List[str]] = None) -> List[Path]:
    """Write the shims into `checkout`; returns the files written or changed."""
    pkg = find_package_dir(checkout)
    written: List[Path] = []

    upstream = pkg / "upstream" / "care"
    atomic.write_text(upstream / "__init__.py", SHIM_HEADER)
    atomic.write_text(
        upstream / "hubconf.py",
        SHIM_HEADER
        + "from care_superb.s3prl_registry import allow_s3prl_checkpoints as _allow\n"
        + "from care_upstream.hubconf import *  # noqa: F401,F403\n\n"
        + "_allow()  # s3prl's resume/evaluate torch.load needs argparse.Namespace allow-listed under torch>=2.6\n",
    )
    written += [upstream / "__init__.py", upstream / "hubconf.py"]

    hub = pkg / "hub.py"
    hub_text = hub.read_text()
    if HUB_LINE not in hub_text:
        atomic.write_text(hub, hub_text.rstrip("\n") + "\n" + HUB_LINE + "\n")
        written.append(hub)

    for task in tasks or project_tasks():
        source = TASKS_DIR / task / "config.yaml"
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such task in care-superb ({', '.join(project_tasks())})")
        target = pkg / "downstream" / task
        atomic.write_text(target / "__init__.py", SHIM_HEADER)
        atomic.write_text(target / "expert.py", SHIM_HEADER + "from downstream_tasks.expert import DownstreamExpert  # noqa: F401\n")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / "config.yaml")
        written += [target / "__init__.py", target / "expert.py", target / "config.yaml"]
    return written


def imported_package_dir() -> Path:
    """The s3prl package folder this Python imports (what `python run_downstream.py` will run)."""
    import s3prl

    return Path(s3prl.__file__).resolve().parent


def import_mismatch(pkg: Path) -> Optional[str]:
    """None when this Python imports s3prl from `pkg`; else what to do, in one sentence.

    A registered checkout only takes effect when its own package is the s3prl Python imports: its
    runner does `from s3prl import hub`, which otherwise loads the pip-installed package, where
    `-u care` does not exist."""
    imported = imported_package_dir()
    pkg = Path(pkg).resolve()
    if imported == pkg:
        return None
    return (
        f"registered into {pkg}, but this Python ({sys.executable}) imports s3prl from {imported}, so "
        f"`python run_downstream.py -u care` in {pkg} would not find the CARE upstreams: make the checkout the "
        f"s3prl Python imports (`pip install -e {pkg.parent}`), or register into the installed package instead "
        f"(`care-superb register-s3prl {imported}`)"
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="care-superb register-s3prl",
        description="Register the CARE upstreams (-u care, care_acoustic, care_semantic) and this project's "
        "tasks (-d emotion_cafe, ...) into your own s3prl checkout. Afterwards: "
        "cd <checkout>/s3prl && python run_downstream.py -m train -u care -k <ckpt> -d emotion_cafe -n exp",
    )
    parser.add_argument("checkout", type=Path, help="s3prl repository root (or its s3prl/ package folder)")
    parser.add_argument("--tasks", nargs="*", help="only these tasks (default: all)")
    args = parser.parse_args(argv)
    try:
        written = register_checkout(args.checkout, args.tasks)
    except FileNotFoundError as e:  # not a checkout, or an unknown --tasks name: the message names it
        print(f"care-superb register-s3prl: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    pkg = find_package_dir(args.checkout)
    mismatch = import_mismatch(pkg)
    if mismatch:
        print(f"care-superb register-s3prl: {mismatch}", file=sys.stderr)
        raise SystemExit(1)
    print(f"registered CARE and {len(args.tasks or project_tasks())} tasks in {pkg} ({len(written)} files written)")
    device = "" if torch.cuda.is_available() else " --device cpu"  # s3prl's runner defaults to cuda
    print(f"next: cd {pkg} && python run_downstream.py -m train -u care -k <ckpt> -d emotion_cafe -n exp1{device}")
