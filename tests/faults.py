"""Builders of bad input for the fault-injection tests (`tests/test_faults.py`).

Each builder writes one kind of fault a real user meets (silent, 1-sample, truncated, NaN, stereo at
an odd rate, dangling and looping symlinks, upper-case extensions, names that are not UTF-8, corrupt
safetensors, shards with swapped keys) and returns the path it wrote, so a test can assert that the
entry point names exactly that file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

import numpy as np
import soundfile as sf

SR = 16000


def speech_like(seconds: float = 1.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced, amplitude-modulated tone with noise: passes every "is this usable audio" check."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def good_wav(path: Path, seconds: float = 1.0, sr: int = SR, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), speech_like(seconds, sr, seed), sr, subtype="PCM_16")
    return path


def silent_wav(path: Path, seconds: float = 1.0, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(int(seconds * sr), dtype=np.float32), sr, subtype="PCM_16")
    return path


def one_sample_wav(path: Path, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.array([0.1], dtype=np.float32), sr, subtype="PCM_16")
    return path


def empty_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated_wav(path: Path, seconds: float = 1.0, keep: float = 0.5, sr: int = SR) -> Path:
    """A WAV whose header promises `seconds` of audio but whose data stops at `keep` of it (a copy
    that was cut off): libsndfile reads the shorter data without complaint."""
    good_wav(path, seconds, sr)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + int((len(data) - 44) * keep)])
    return path


def nan_wav(path: Path, seconds: float = 1.0, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = speech_like(seconds, sr)
    x[len(x) // 2] = np.nan
    sf.write(str(path), x, sr, subtype="FLOAT")
    return path


def stereo_wav(path: Path, seconds: float = 1.0, sr: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = speech_like(seconds, sr)
    sf.write(str(path), np.stack([x, 0.5 * x], axis=1), sr, subtype="PCM_16")
    return path


def garbage_file(path: Path, size: int = 2048) -> Path:
    """Bytes that no audio decoder accepts, under an audio extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def dangling_symlink(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.parent / "does-not-exist.wav", path)
    return path


def symlink_loop(path: Path) -> Path:
    """`path` -> `path`.loop -> `path`: resolving either raises ELOOP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    other = path.with_name(path.name + ".loop")
    os.symlink(other, path)
    os.symlink(path, other)
    return path


def upper_case_copy(path: Path) -> Path:
    """`x.wav` -> `x.WAV` (as a corpus copied from a FAT drive may have it)."""
    target = path.with_suffix(path.suffix.upper())
    good_wav(target)
    return target


def non_utf8_name(folder: Path, stem: bytes = b"caf\xe9") -> Path:
    """A file whose name is Latin-1 bytes, not UTF-8 (Info-ZIP unpacks CaFE like this)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.path.join(os.fsencode(folder), stem + b".wav")
    sf.write(open(raw, "wb"), speech_like(1.0), SR, format="WAV", subtype="PCM_16")
    return Path(os.fsdecode(raw))


def corrupt_safetensors(path: Path, how: str = "truncate") -> Path:
    """Damage an existing safetensors file: `truncate` (half of it), `empty`, or `garbage` header."""
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\xff" * 8 + data[8:])
    else:
        raise ValueError(how)
    return path


def swap_safetensors_keys(path: Path, a: str, b: str) -> Path:
    """Rewrite a safetensors file with the tensors stored under `a` and `b` exchanged (same shapes
    required): every byte of every tensor is intact, only which key serves which data changed."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    tensors: Dict[str, np.ndarray] = load_file(str(path))
    tensors[a], tensors[b] = tensors[b], tensors[a]
    save_file(tensors, str(path), metadata=metadata)
    return path


def swap_safetensors_metadata_items(path: Path, field: str, i: int = 0, j: int = 1) -> Path:
    """Exchange items `i` and `j` of the JSON list stored under metadata `field` (the sweep cache's
    utterance `keys`), tensors untouched: each of the two utterances would be served the other's row."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="np") as f:
        metadata = dict(f.metadata())
    items = json.loads(metadata[field])
    items[i], items[j] = items[j], items[i]
    metadata[field] = json.dumps(items)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    return path


def zero_rate_wav(path: Path, seconds: float = 1.0) -> Path:
    """A WAV whose header says 0 samples per second (and 0 bytes per second): a broken writer's output."""
    import struct

    good_wav(path, seconds)
    data = bytearray(path.read_bytes())
    data[24:32] = struct.pack("<II", 0, 0)
    path.write_bytes(bytes(data))
    return path
