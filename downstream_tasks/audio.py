"""Load any corpus audio the same way: mono, 16 kHz, cropped to 30 s, padded to 1 s (SPEC §4).

Bad files raise `AudioError` (a ValueError naming the file and the problem) so `prepare` can skip
and list them instead of letting a NaN reach a training batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """An audio file that cannot be used: unreadable, empty, or with non-finite samples."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = SAMPLE_RATE
    max_seconds: Optional[float] = 30.0
    min_seconds: Optional[float] = 1.0


def _read(path: Path, start: Optional[float], end: Optional[float]) -> Tuple[np.ndarray, int]:
    """(frames, channels) float32 and the file's rate; soundfile first, torchaudio for the rest."""
    # Opened by Python, not by name: libsndfile cannot open a path that is not valid UTF-8
    # (raw CP437 folder names in CaFE), while Python's open() takes the surrogate-escaped bytes.
    try:
        with open(path, "rb") as f, sf.SoundFile(f) as snd:
            sr = snd.samplerate
            first = int(round(start * sr)) if start else 0
            last = min(int(round(end * sr)), snd.frames) if end is not None else snd.frames
            if last <= first:
                return np.zeros((0, snd.channels), dtype=np.float32), sr
            snd.seek(first)
            return snd.read(last - first, dtype="float32", always_2d=True), sr
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except Exception as sf_error:  # formats libsndfile does not know (mp4, ...)
        try:
            try:
                wav, sr = torchaudio.load(str(path))
            except UnicodeEncodeError:
                with open(path, "rb") as f:
                    wav, sr = torchaudio.load(f)
        except Exception as ta_error:
            raise AudioError(path, f"unreadable ({sf_error}; {ta_error})") from None
        data = wav.T.numpy()
        first = int(round(start * sr)) if start else 0
        last = int(round(end * sr)) if end is not None else len(data)
        return data[first:last], sr


Segments = Optional[Sequence[Tuple[float, float]]]


def _read_segments(path: Path, segments: Segments) -> Tuple[np.ndarray, int]:
    """The whole file, or the (start, end)-second pieces concatenated (DAIC-WOZ windows span turns)."""
    if not segments:
        data, sr = _read(path, None, None)
    else:
        parts = [_read(path, s, e) for s, e in segments]
        sr = parts[0][1]
        data = np.concatenate([d for d, _ in parts], axis=0)
    if data.size == 0:
        raise AudioError(path, "no samples" if not segments else f"no samples in segment(s) {list(segments)}")
    if not np.isfinite(data).all():
        raise AudioError(path, "NaN or infinite samples")
    return data, sr


def load_audio(path, cfg: AudioConfig = AudioConfig(), start: Optional[float] = None,
               end: Optional[float] = None, crop_pad: bool = True, segments: Segments = None) -> torch.Tensor:
    """1-D float32 tensor at `cfg.sample_rate`; `start`/`end` or `segments` (seconds) select audio.

    Cropping keeps the first `max_seconds` (deterministic, as s3prl's stock tasks do); padding
    appends zeros. `crop_pad=False` returns the resampled signal untouched (used to measure).
    """
    if start is not None or end is not None:
        segments = [(start or 0.0, end)]
    data, sr = _read_segments(Path(path), segments)
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))
    if sr != cfg.sample_rate:
        wav = torchaudio.functional.resample(wav, sr, cfg.sample_rate)
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
    """Check a file (or its segments) fully: readable, non-empty, finite; return the duration in seconds."""
    data, sr = _read_segments(Path(path), segments)
    return len(data) / float(sr)
