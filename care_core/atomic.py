"""Atomic file writes: readers (and a resumed job) see the old file or the whole new one, never half.

Every long job of the project (manifests, target shards, trainer checkpoints, sweep caches and
results) writes through here: a temp file beside the target, fsync, `os.replace`, fsync of the
folder. A failure or a kill removes (or leaves behind, as a dot-file) only the temp file.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: os.PathLike) -> Iterator[Path]:
    """A temp path beside `path` for writers that want a file name (torch.save, safetensors,
    savefig); on a clean exit it is made durable and renamed onto `path`, on an error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; colleagues on a shared machine must read results
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync(path.parent)  # the rename itself survives a power cut; not every filesystem allows it
    except OSError:
        pass


def write_bytes(path: os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: os.PathLike, text: str, *, encoding: str = "utf-8", errors: str = "surrogateescape",
               newline: Optional[str] = "") -> None:
    """UTF-8 with ``surrogateescape``: a path whose bytes are not UTF-8 (CaFE unzipped by Info-ZIP has
    raw CP437 folder names) is written back byte for byte and reads back as the same path. No newline
    translation, so CSV text from the ``csv`` module is written as built."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding, errors=errors, newline=newline) as f:
            f.write(text)


def write_json(path: os.PathLike, obj: Any, *, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def write_torch(path: os.PathLike, obj: Any) -> None:
    """`torch.save` through a temp file: a kill mid-write leaves the previous checkpoint intact."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
