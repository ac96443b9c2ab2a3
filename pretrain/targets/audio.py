"""Reading one audio file into the mono 16 kHz float32 waveform every teacher sees.

A pre-training corpus of 150 k files always holds a few broken ones. Instead of crashing hours into a
run, `load_audio` raises `BadAudioError` with a short machine-readable reason; the extractor skips the
file, counts it and lists it in ``skipped.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from care_core.audio import SILENCE_PEAK, AudioError, check_usable, read_mono
from pretrain.targets.frames import SAMPLE_RATE, care_min_samples

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


class BadAudioError(ValueError):
    """A file gives no usable waveform. ``reason`` is the decoder's or `check_usable`'s: unreadable,
    empty, truncated, nan, silent, too_short."""

    def __init__(self, path: Path | str, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class AudioChecks:
    """Thresholds of the project's one usable-audio rule (`care_core.audio.check_usable`), which
    `care-superb prepare` applies too.

    ``silence_peak``: a peak amplitude below this (full scale 1.0) is digital silence or a dead
    channel; its normalised features would be noise. ``min_samples`` None means the conv receptive
    field (400): shorter audio gives zero model frames, hence no acoustic target.
    """

    silence_peak: float = SILENCE_PEAK
    min_samples: Optional[int] = None

    @property
    def effective_min_samples(self) -> int:
        return care_min_samples() if self.min_samples is None else int(self.min_samples)


@dataclass
class Waveform:
    samples: np.ndarray  # (N,) float32, 16 kHz mono
    orig_sample_rate: int
    orig_channels: int


def load_audio(path: Path | str, checks: AudioChecks = AudioChecks()) -> Waveform:
    """Decode ``path``, mix down to mono, resample to 16 kHz, and check it; raises `BadAudioError`."""
    try:
        wav, sr, channels = read_mono(path, SAMPLE_RATE)
        check_usable(wav, path, min_samples=checks.effective_min_samples, silence_peak=checks.silence_peak)
    except AudioError as err:
        raise BadAudioError(path, err.reason, err.problem) from None
    return Waveform(np.ascontiguousarray(wav.numpy(), dtype=np.float32), int(sr), channels)


def _strip_suffix(rel: Path) -> str:
    return rel.with_suffix("").as_posix()


def list_audio(source: Path | str) -> List[Tuple[str, str]]:
    """``(id, absolute path)`` pairs sorted by id, from a folder (recursive) or a list file (one path a line).

    Ids are paths relative to the folder (or to the list's common parent) without the suffix, so
    they stay unique across speaker sub-folders and are the same on every worker. Suffixes match in
    any case (``.WAV``), and a symbolic link is listed even when broken: its decoding then fails and
    it is skipped with its reason, never silently dropped. Names that are not valid UTF-8 are kept as
    Python gives them (surrogate escapes) and written back as the same bytes.
    """
    source = Path(source)
    if source.is_dir():
        paths = [
            p for p in sorted(source.rglob("*"))
            if (p.is_symlink() or p.is_file()) and p.suffix.lower() in AUDIO_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(source).parts)
        ]
        root = Path(os.path.abspath(source))
        paths = [Path(os.path.abspath(p)) for p in paths]
    elif source.is_file():
        paths = []
        for n, line in enumerate(source.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            if not p.is_absolute():
                p = source.parent / p
            paths.append(Path(os.path.abspath(p)))
        if not paths:
            raise ValueError(f"{source}: audio list holds no paths")
        root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    else:
        raise ValueError(f"{source}: neither an audio folder nor a list file")
    if not paths:
        raise ValueError(f"{source}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    pairs: dict = {}
    for p in paths:
        utt_id = _strip_suffix(p.relative_to(root))
        if utt_id in pairs:
            raise ValueError(f"{source}: id {utt_id!r} is shared by {pairs[utt_id]} and {p}")
        pairs[utt_id] = str(p)
    return sorted(pairs.items())


def partition(items: Sequence, rank: int, world_size: int) -> list:
    """Worker ``rank``'s part of the sorted list: every ``world_size``-th item, disjoint and deterministic."""
    if world_size < 1 or not (0 <= rank < world_size):
        raise ValueError(f"shard {rank}/{world_size}: need 0 <= K < N")
    return list(items[rank::world_size])
