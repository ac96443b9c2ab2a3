"""Load any corpus audio the same way: mono, 16 kHz, cropped to 30 s, padded to 1 s.

Bad files raise `AudioError` (from the shared decoder `care_core.audio`: a ValueError naming the
file and the problem) so `prepare` can skip and list them instead of letting a NaN reach a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from care_core.audio import SAMPLE_RATE, AudioError, Segments, check_usable, read_mono

__all__ = ["AudioConfig", "AudioError", "crop_or_pad", "load_audio", "probe_audio"]


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = SAMPLE_RATE
    max_seconds: Optional[float] = 30.0
    min_seconds: Optional[float] = 1.0


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
    frame), the same rule `care-pretrain targets` applies."""
    wav, _, _ = read_mono(path, SAMPLE_RATE, segments)
    check_usable(wav, path)
    return wav.numel() / float(SAMPLE_RATE)
