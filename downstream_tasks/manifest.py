"""The manifest: one CSV per task folder, one row per utterance, one column per fold.

Format (``<out>/manifest.csv``, UTF-8, header row)::

    id,path,speaker,label,duration,segments[,<target>...],fold1,...,foldK

* ``path`` is absolute (the raw corpus is never copied); ``duration`` is the file's (or segment's)
  length in seconds before cropping/padding; ``segments`` is empty for a whole file, else the
  pieces of the file that make the utterance, ``start-end;start-end`` in seconds, concatenated
  (one piece for a plain segment; DAIC-WOZ windows span several turns); ``label`` is empty for
  regression tasks, whose targets get one
  column each (e.g. ``valence,arousal,dominance``).
* ``foldN`` holds ``train``, ``dev``, ``test`` or ``-`` (not used in that fold).

Wide rather than long so that one file answers "which split is this utterance in for every fold"
and a reader sees all folds of a speaker at a glance. Next to it `prepare` writes ``skipped.csv``
(file, reason) and, last, ``summary.json``: the completion marker. `read_manifest` refuses a
manifest without one, or whose row count disagrees with it (a run killed between the two files).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from care_core import atomic
from care_core.segments import segments_from_str, segments_to_str

MANIFEST = "manifest.csv"
SKIPPED = "skipped.csv"
SUMMARY = "summary.json"
BASE_COLUMNS = ("id", "path", "speaker", "label", "duration", "segments")
FOLD_COLUMN = re.compile(r"fold\d+")


@dataclass
class ManifestRow:
    id: str
    path: str
    speaker: str
    label: Optional[str]
    duration: float
    segments: Optional[List[Tuple[float, float]]] = None
    targets: Dict[str, float] = field(default_factory=dict)
    folds: Dict[str, str] = field(default_factory=dict)


def _fmt(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.6f}".rstrip("0").rstrip(".")


def write_manifest(path: Path, rows: Sequence[ManifestRow], fold_names: Sequence[str],
                   targets: Sequence[str] = ()) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*BASE_COLUMNS, *targets, *fold_names])
    for r in rows:
        w.writerow([r.id, r.path, r.speaker, r.label or "", _fmt(r.duration), segments_to_str(r.segments),
                    *(repr(float(r.targets[t])) for t in targets), *(r.folds[f] for f in fold_names)])
    atomic.write_text(path, buf.getvalue())


@dataclass
class Manifest:
    rows: List[ManifestRow]
    fold_names: List[str]
    targets: List[str]

    def split(self, fold: str, split: str) -> List[ManifestRow]:
        """Rows of one split of one fold (`split` in train/dev/test)."""
        if fold not in self.fold_names:
            raise ValueError(f"fold {fold!r} not in manifest (has {', '.join(self.fold_names)})")
        return [r for r in self.rows if r.folds[fold] == split]


def read_manifest(path) -> Manifest:
    """Parse a manifest (a file, or a folder holding ``manifest.csv``); bad rows raise naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run `care-superb prepare <task> --root ... --out {path.parent}`")
    expected = _completed_rows(path)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty manifest") from None
        if tuple(header[: len(BASE_COLUMNS)]) != BASE_COLUMNS:
            raise ValueError(f"{path}: header must start with {','.join(BASE_COLUMNS)}, got {header}")
        rest = header[len(BASE_COLUMNS):]
        folds = [c for c in rest if FOLD_COLUMN.fullmatch(c)]
        targets = [c for c in rest if not FOLD_COLUMN.fullmatch(c)]
        if not folds:
            raise ValueError(f"{path}: no fold columns in header")
        rows = []
        for lineno, cells in enumerate(reader, start=2):
            if len(cells) != len(header):
                raise ValueError(f"{path}:{lineno}: {len(cells)} cells, header has {len(header)}")
            d = dict(zip(header, cells))
            rows.append(ManifestRow(
                id=d["id"], path=d["path"], speaker=d["speaker"], label=d["label"] or None,
                duration=float(d["duration"]), segments=segments_from_str(d["segments"], f"{path}:{lineno}"),
                targets={t: float(d[t]) for t in targets}, folds={f: d[f] for f in folds}))
    if len(rows) != expected:
        raise ValueError(f"{path}: {len(rows)} rows but its {SUMMARY} says {expected}: the two come from different "
                         f"runs of `care-superb prepare`; run it again")
    return Manifest(rows, folds, targets)


def _completed_rows(manifest: Path) -> int:
    """The row count the finished prepare recorded in summary.json, written after the manifest as its
    completion marker; a manifest without one is the half of an interrupted run and is refused."""
    summary = manifest.parent / SUMMARY
    again = f"run `care-superb prepare <task> --root ... --out {manifest.parent}` again"
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{manifest}: no {SUMMARY} beside it, so the prepare that wrote it did not finish; "
                         f"{again}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{summary}: unreadable ({e}); {again}") from None
    if not isinstance(data, dict) or not isinstance(data.get("n_utterances"), int):
        raise ValueError(f"{summary}: not a prepare summary (no n_utterances); {again}")
    return data["n_utterances"]


def write_skipped(path: Path, skipped: Sequence[tuple]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "reason"])
    w.writerows(skipped)
    atomic.write_text(path, buf.getvalue())
