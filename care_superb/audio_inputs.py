"""Which audio files a command was given: files, folders (searched recursively) and list files.

Shared by `care-superb predict` and `care-superb extract` so both accept the same inputs and say
the same thing about inputs that hold no audio. Whether a file *decodes* is left to the decoder at
use time: a bad file is then skipped and listed with its reason, not refused up front.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4", ".aac", ".aif", ".aiff", ".au",
                  ".sph", ".webm", ".wma")
LIST_SUFFIXES = (".txt", ".lst", ".list", ".scp")


class InputError(ValueError):
    """An input argument that yields no audio at all; the message names it."""


def is_audio_name(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


def read_list_file(path: Path) -> List[Path]:
    """One path per line (blank lines and # comments ignored); relative paths are relative to the list."""
    out = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def collect_audio(items: Sequence[os.PathLike]) -> List[Path]:
    """Audio paths in the order given (folder contents sorted), each once.

    A folder with no audio file, a list file with no lines, or a path that does not exist raises
    `InputError`; a named file is taken as audio whatever its suffix (the decoder decides).
    """
    files: List[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_audio_name(p))
            if not found:
                others = sum(1 for p in path.rglob("*") if p.is_file())
                raise InputError(f"{path}: no audio files in this folder ({others} other files; looked for "
                                 f"{', '.join(AUDIO_SUFFIXES[:6])}, ...)")
            files += found
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            listed = read_list_file(path)
            if not listed:
                raise InputError(f"{path}: list file names no audio files")
            files += listed
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    seen, unique = set(), []
    for f in files:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    return unique


def output_names(paths: Sequence[Path]) -> List[Path]:
    """Collision-free relative names for per-file outputs: each path relative to the inputs' common
    folder, suffix kept (``a.wav`` and ``a.flac`` stay apart)."""
    if not paths:
        return []
    absolute = [Path(os.path.abspath(p)) for p in paths]
    common = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    return [p.relative_to(common) for p in absolute]
