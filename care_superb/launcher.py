"""Fill s3prl's path-dependent defaults, register CARE, and hand the command line to s3prl's runner.

Expected bad input stops with one sentence and no traceback: an upstream name s3prl does not know
(s3prl itself would fail with ``module 's3prl.hub' has no attribute ...``), and a project upstream
that cannot be built (missing or damaged weights, a list for config.json, openSMILE not installed).
"""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import torch

from care_superb.s3prl_registry import TASKS_DIR, care_hub_entries, register

# What building a project upstream raises for bad input; each message already names the file.
# (HubError is a FileNotFoundError, OpenSmileUnavailable an ImportError.)
LOAD_ERRORS = (ValueError, FileNotFoundError, ImportError)


class UpstreamError(Exception):
    """An `-u` / `-k` the runner cannot use; its message is the one sentence shown to the user."""


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


def check_upstream(name: str) -> None:
    """Raise UpstreamError naming close upstream names when `name` is not on s3prl's hub."""
    from s3prl import hub

    options = hub.options()
    if name in options:
        return
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.6)
    hint = f"close names: {', '.join(close)}" if close else f"this project's: {', '.join(care_hub_entries())}"
    raise UpstreamError(f"-u {name!r} is not an upstream of s3prl or of this project ({hint}; "
                        f"s3prl's full list: python -c 'import s3prl.hub as h; print(h.options())')")


def guard(name: str, build: Callable) -> Callable:
    """`build` (a hub entry) with its bad-input errors turned into UpstreamError("-u name: ...")."""

    @functools.wraps(build)
    def guarded(*args, **kwargs):
        try:
            return build(*args, **kwargs)
        except LOAD_ERRORS as e:
            message = str(e)
            raise UpstreamError(message if message.startswith(f"-u {name} ") else f"-u {name}: {message}") from e

    return guarded


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    register()
    from s3prl import hub, run_downstream

    for name, build in care_hub_entries().items():
        setattr(hub, name, guard(name, build))
    argv = complete_args(argv)
    try:
        upstream = _flag_value(argv, "-u", "--upstream")
        if upstream is not None and not _has_flag(argv, "-e", "--past_exp"):
            check_upstream(upstream)
        sys.argv = ["run_downstream.py"] + argv
        run_downstream.main()
    except UpstreamError as e:
        print(f"run_downstream.py: {e}", file=sys.stderr)
        raise SystemExit(2) from None
