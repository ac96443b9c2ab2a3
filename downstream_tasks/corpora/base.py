"""Records and errors shared by every corpus parser.

A parser reads a corpus in the layout it was distributed in and returns `Utterance` records. It maps
raw labels to the task's label set and never splits: folds are the protocol engine's job
(`downstream_tasks.protocol`). Surprises raise `CorpusError`, whose message names the offending file.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional


class CorpusError(ValueError):
    """A corpus does not look the way its documentation says: wrong layout, unknown label, bad name."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Utterance:
    """One labelled audio segment.

    `id` is corpus-prefixed (e.g. ``cafe-01-C-1-1``) so ids from different corpora never collide.
    `label` is the task label (a class name), or None for regression tasks whose targets live in
    `extra` (e.g. ``{"valence": 3.5, "arousal": 2.0, "dominance": 3.0}``). `extra` also carries
    corpus-specific facts the protocol needs (session, official split, segment offsets, ...).
    """

    id: str
    path: Path
    speaker: str
    label: Optional[str]
    corpus: str
    extra: Dict[str, Any] = field(default_factory=dict)


def visible(root: Path, path: Path) -> bool:
    """False for macOS debris in any path part below `root`: hidden names (``._*`` copies,
    ``.DS_Store``) and ``__MACOSX/`` folders that zip tools add beside the real tree."""
    return not any(part.startswith(".") or part == "__MACOSX" for part in Path(path).relative_to(root).parts)


def iter_files(root: Path, pattern: str) -> Iterator[Path]:
    """Every visible name under `root` matching `pattern` case-insensitively that is not a folder.

    Case-insensitive because a corpus copied from a FAT drive or a Windows share arrives as
    ``X.WAV``. Symlinks are yielded whether or not they resolve (dangling, looping): the audio check
    then lists them in skipped.csv with their reason, instead of them vanishing from the counts.
    """
    root = Path(root)
    pattern = pattern.lower()
    for path in sorted(root.rglob("*")):
        if fnmatch.fnmatchcase(path.name.lower(), pattern) and visible(root, path) and not path.is_dir():
            yield path


def find_audio(path: Path) -> Optional[Path]:
    """The file a label row names: `path` itself if the name exists (even as a broken symlink,
    which the audio check then reports), else the same name with its extension in another case
    (``X.WAV`` for ``X.wav``), else None."""
    path = Path(path)
    if os.path.lexists(path):
        return path
    if path.parent.is_dir():
        for other in path.parent.iterdir():
            if other.stem == path.stem and other.suffix.lower() == path.suffix.lower():
                return other
    return None


def report(err: CorpusError, strict: bool, skipped: Optional[List[CorpusError]]) -> None:
    """A recoverable problem (a missing wav, a NaN target): raise it in strict mode, else collect it
    in `skipped` so that prepare lists it in skipped.csv."""
    if strict:
        raise err
    if skipped is not None:
        skipped.append(err)
