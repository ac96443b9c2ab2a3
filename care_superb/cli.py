"""`care-superb`: one entry point for the project's data, model and benchmark commands.

Each subcommand lives in the package that owns it and exposes `main(argv)`; this module only routes,
importing lazily so that `care-superb --help` is instant and a missing optional extra only affects
the command that needs it.
"""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional

COMMANDS = {
    "prepare": ("downstream_tasks.prepare", "read a raw corpus, check its audio, write manifests with the paper's folds"),
    "demo-corpus": ("downstream_tasks.demo_corpus", "write a small synthetic corpus in CaFE's layout (offline demo; meaningless emotions)"),
    "sweep": ("sweep.runner", "probe upstreams over tasks x folds x seeds, resumable, with a paper-style table"),
    "table": ("sweep.table", "rebuild table.md / table.csv and plots from a sweep folder"),
    "register-s3prl": ("care_superb.checkout", "register CARE and the tasks into your own s3prl checkout"),
    "convert-authors": ("care_upstream.convert_authors", "convert the authors' CARE training checkpoint to this project's format"),
    "params": ("care_superb.params", "count the parameters of the three CARE variants at full size (no download)"),
    "predict": ("care_superb.predict", "predict emotions of audio files with a trained run or classifier (predictions.csv)"),
    "extract": ("care_superb.extract", "write embeddings of an upstream for audio files (safetensors / npy), resumable"),
    "export-classifier": ("care_superb.export_classifier", "write a trained run as one classifier folder (config.json + model.safetensors + card)"),
    "push": ("care_superb.hub_push", "upload an upstream or classifier folder to the Hugging Face Hub with a model card"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: care-superb <command> [options]   (care-superb <command> --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"care-superb: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[name][0])
    module.main(rest)


if __name__ == "__main__":
    main()
