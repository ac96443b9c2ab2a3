"""Atomic file writes: readers (and a resumed job) see the old file or the whole new one, never half.

Every long job of the project (manifests, target shards, trainer checkpoints, sweep caches and
results) writes through here: a temp file beside the target, fsync, `os.replace`, fsync of the
folder. A failure or a kill removes (or leaves behind, as a dot-file) only the temp file.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional


def _create_temp(folder: Path, prefix: str) -> Path:
    """A new, empty temp file in `folder`, created with mode 0666 so that the kernel applies the
    process umask (mkstemp's 0600 would hide results from colleagues on a shared machine; reading the
    umask with os.umask would briefly change it for every thread of the process)."""
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(8)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temp file name for {prefix!r}")


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
    tmp = _create_temp(path.parent, f".{path.name}.")
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
