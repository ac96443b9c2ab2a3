"""What a sweep cell is, where it lives on disk, and the `results.json` it leaves behind.

A cell is one probe training: (task, fold, seed, upstream). Its folder is
``<out>/<task>/<upstream key>/<fold>/seed<seed>/`` and it is *finished* exactly when a valid
``results.json`` with ``status == "done"`` sits there. Everything the table needs (metrics, layer
weights, config, seed, software versions) is in that file, so ``care-superb table runs/`` can rebuild
the table from the folder alone, and a sweep that was killed resumes by skipping finished cells.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

RESULTS_NAME = "results.json"
PLAN_NAME = "sweep.json"
SCHEMA_VERSION = 1

# Column labels: the paper's Table II names for the upstreams it compares, and the baselines' usual
# names; anything else keeps its hub name.
KNOWN_LABELS = {
    "care": "CARE", "care_acoustic": "CARE (acoustic+common)", "care_semantic": "CARE (semantic+common)",
    # s3prl's `wavlm` is WavLM Base+ (its hubconf: "The default model - Base-Plus"), not the paper's base
    "wavlm": "WavLM-base+", "wavlm_base": "WavLM-base", "wavlm_base_plus": "WavLM-base+",
    "wavlm_local": "WavLM-base", "hubert": "HuBERT-base", "hubert_base": "HuBERT-base", "hubert_local": "HuBERT-base",
    "fbank": "FBANK", "mfcc": "MFCC", "egemaps": "eGeMAPS", "compare": "ComParE",
    "egemaps_raw": "eGeMAPS (raw)", "compare_raw": "ComParE (raw)",
}
CARE_HUBS = ("care", "care_acoustic", "care_semantic")


class ConfigError(ValueError):
    """Bad input to a sweep (a name, a path, an override, a config that cannot give a result): said
    in one sentence with what to change, because running the same command again fails the same way."""


class ResultsError(ValueError):
    """A `results.json` that cannot be trusted: unreadable, wrong schema, or missing fields."""

    def __init__(self, path: os.PathLike, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash: a checkpoint or audio file is identified by its bytes, not its name or mtime."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: os.PathLike) -> str:
    """Hash of a file, or of a folder's files (names and bytes, sorted): CARE checkpoints are folders."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class UpstreamSpec:
    """An upstream as the command line names it: ``[<name>=]<hub name>[:<checkpoint>]``.

    ``care:/ckpt/dir`` is s3prl's ``-u care -k /ckpt/dir``; ``wavlm`` is ``-u wavlm`` (s3prl downloads
    its weights). `key` names folders; it includes a short checkpoint hash when a checkpoint is given,
    so two CARE checkpoints never share cells or cache entries. `label` is the table column: the
    user's ``<name>`` when given, else the CARE folder's name for a CARE checkpoint (two checkpoints
    of one model are then told apart by names a reader chose), else the model's usual name.
    """

    hub: str
    ckpt: Optional[str] = None
    ckpt_sha256: Optional[str] = None
    label: str = ""
    key: str = ""

    @classmethod
    def parse(cls, text: str, *, hash_ckpt: bool = True) -> "UpstreamSpec":
        name, spec = None, text
        head, eq, tail = text.partition("=")
        if eq and ":" not in head:  # `init=care:<folder>`; a `=` inside a checkpoint path is no name
            name, spec = head.strip(), tail
            if not name:
                raise ValueError(f"upstream {text!r}: empty name before '='")
        hub, _, ckpt = spec.partition(":")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", hub or ""):
            raise ValueError(f"upstream {text!r}: expected [<name>=]<s3prl hub name>[:<checkpoint>]")
        ckpt_path = ckpt or None
        digest = None
        if ckpt_path is not None:
            if not Path(ckpt_path).exists():
                from care_upstream import hub as hf_hub

                if not hf_hub.is_repo_id(ckpt_path):
                    raise ValueError(f"upstream {text!r}: checkpoint {ckpt_path} does not exist")
                try:  # a Hugging Face Hub id (`org/name[@rev]`): its cached snapshot folder
                    ckpt_path = str(hf_hub.resolve(ckpt_path))
                except (OSError, ValueError) as e:
                    raise ValueError(f"upstream {text!r}: {e}") from None
            ckpt_path = str(Path(ckpt_path).resolve())
            digest = sha256_path(ckpt_path) if hash_ckpt else None
        key = hub if digest is None else f"{hub}-{digest[:10]}"
        return cls(hub=hub, ckpt=ckpt_path, ckpt_sha256=digest, label=name or default_label(hub, ckpt_path), key=key)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def default_label(hub: str, ckpt: Optional[str]) -> str:
    """A CARE checkpoint is labelled by its folder (``care_step0``), with the variant when it is not
    the full model; everything else by the model's usual name."""
    known = KNOWN_LABELS.get(hub, hub)
    if ckpt is None or hub not in CARE_HUBS:
        return known
    p = Path(ckpt)
    folder = p.name if p.is_dir() else p.parent.name
    return folder if hub == "care" else f"{folder} {known[len('CARE '):]}"


@dataclass(frozen=True)
class Cell:
    task: str
    fold: str
    seed: int
    upstream: UpstreamSpec

    def dir(self, out: os.PathLike) -> Path:
        return Path(out) / self.task / self.upstream.key / self.fold / f"seed{self.seed}"

    def results_path(self, out: os.PathLike) -> Path:
        return self.dir(out) / RESULTS_NAME

    @property
    def name(self) -> str:
        return f"{self.task}/{self.upstream.key}/{self.fold}/seed{self.seed}"


def expand_cells(tasks: Sequence[str], runs: Mapping[str, Sequence[Tuple[str, int]]],
                 upstreams: Sequence[UpstreamSpec]) -> List[Cell]:
    """All cells, ordered upstream-major so that one upstream's cache is used while it is warm.
    `runs[task]`: its (fold, seed) pairs (`TaskSpec.runs_of`: every fold × every seed, or for DAIC-WOZ,
    whose folds are redraws of the segments, seed i on draw i)."""
    return [Cell(t, f, s, u) for u in upstreams for t in tasks for f, s in runs[t]]


def software_versions() -> Dict[str, str]:
    """Versions that change numbers: stored in every results.json so a table can be audited later."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "torchaudio", "s3prl", "numpy", "sklearn", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # an absent optional package is recorded, not fatal
            versions[mod] = "absent"
    try:
        root = Path(__file__).resolve().parent.parent
        versions["git_commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
        ).stdout.strip() or "unknown"
    except Exception:
        versions["git_commit"] = "unknown"
    return versions


REQUIRED_FIELDS = ("schema", "status", "task", "fold", "seed", "upstream", "metrics", "config", "versions")


def validate_results(data: Any, path: os.PathLike) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise ResultsError(path, "not a JSON object")
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ResultsError(path, f"missing field(s) {missing}")
    if data["schema"] != SCHEMA_VERSION:
        raise ResultsError(path, f"schema {data['schema']!r}, this code reads {SCHEMA_VERSION}")
    if data["status"] == "done":
        test = data["metrics"].get("test") if isinstance(data["metrics"], dict) else None
        if not isinstance(test, dict) or not test:
            raise ResultsError(path, "status is done but metrics.test is empty")
        for name, value in test.items():
            if not isinstance(value, (int, float)) or value != value:  # NaN never makes it into a table
                raise ResultsError(path, f"metrics.test.{name} is {value!r}, not a number")
    if not isinstance(data["upstream"], dict) or "key" not in data["upstream"]:
        raise ResultsError(path, "upstream must be an object with a key")
    return data


def read_results(path: os.PathLike) -> Dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ResultsError(path, f"invalid JSON ({e})") from None
    return validate_results(data, path)


def is_done(cell: Cell, out: os.PathLike, config_hash: Optional[str] = None) -> bool:
    """Finished with a trustworthy result (and, if given, the same probe config)."""
    path = cell.results_path(out)
    if not path.is_file():
        return False
    try:
        data = read_results(path)
    except ResultsError:
        return False
    if data["status"] != "done":
        return False
    return config_hash is None or data.get("config_hash") == config_hash


def iter_results(out: os.PathLike) -> Iterator[tuple]:
    """(path, data or ResultsError) for every cell's results.json under `out`, sorted for stable tables.

    Only ``<task>/<upstream>/<fold>/seed<k>/results.json``: the s3prl experiment folder inside a cell
    holds the expert's own results.json, which is not a cell record."""
    for path in sorted(Path(out).glob(f"*/*/*/seed*/{RESULTS_NAME}")):
        try:
            yield path, read_results(path)
        except ResultsError as e:
            yield path, e


def config_digest(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
