"""Load any corpus audio the same way: mono, 16 kHz, cropped to 30 s, padded to 1 s.

Bad files raise `AudioError` (from the shared decoder `care_core.audio`: a ValueError naming the
file and the problem) so `prepare` can skip and list them instead of letting a NaN reach a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from care_core.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, Segments, check_usable, read_mono, read_segments

__all__ = ["AudioConfig", "AudioError", "crop_or_pad", "load_audio", "probe_audio"]


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = SAMPLE_RATE
    max_seconds: Optional[float] = 30.0
    min_seconds: Optional[float] = 1.0

    @classmethod
    def from_datarc(cls, datarc: Mapping[str, Any]) -> "AudioConfig":
        """A task config's crop/pad settings (``max_seconds``, ``min_seconds``), these defaults where absent:
        the one reading of them for the expert, the sweep's cache and an exported classifier."""
        return cls(max_seconds=datarc.get("max_seconds", cls.max_seconds),
                   min_seconds=datarc.get("min_seconds", cls.min_seconds))


def load_audio(path, cfg: AudioConfig = AudioConfig(), start: Optional[float] = None,
               end: Optional[float] = None, crop_pad: bool = True, segments: Segments = None) -> torch.Tensor:
    """1-D float32 tensor at `cfg.sample_rate`; `start`/`end` or `segments` (seconds) select audio.

    Cropping keeps the first `max_seconds` (deterministic, as s3prl's stock tasks do); padding
    appends zeros. `crop_pad=False` returns the resampled signal untouched (used to measure).
    """
    if start is not None or end is not None:
        segments = [(start or 0.0, end)]
    wav, _, _ = read_mono(path, cfg.sample_rate, segments)
    if crop_pad:
        wav = crop_or_pad(wav, cfg)
    return wav


def crop_or_pad(wav: torch.Tensor, cfg: AudioConfig = AudioConfig()) -> torch.Tensor:
    if cfg.max_seconds is not None:
        wav = wav[: int(cfg.max_seconds * cfg.sample_rate)]
    if cfg.min_seconds is not None:
        need = int(cfg.min_seconds * cfg.sample_rate) - wav.numel()
        if need > 0:
            wav = torch.nn.functional.pad(wav, (0, need))
    return wav


def probe_audio(path, segments: Segments = None) -> float:
    """Check a file (or its segments) fully and return the duration in seconds: readable, complete
    (not truncated), non-empty, finite, then `check_usable` (not silent, not shorter than one model
    frame), the same rule `care-pretrain targets` applies.

    The check runs at the file's own rate, with the 16 kHz sample minimum scaled to it: resampling
    only to count samples cost 50 ms per 48 kHz clip (torch kernels on a busy 2-core machine) against
    1 ms to decode, i.e. most of the time `prepare` spends on RAVDESS or CaFE."""
    data, sr = read_segments(Path(path), segments)
    check_usable(data.mean(axis=1), path, min_samples=math.ceil(MIN_SAMPLES * sr / SAMPLE_RATE))
    return len(data) / float(sr)
