"""Decoding any audio file into the mono waveform at 16 kHz that every model here sees.

One decoder for corpus preparation, probing and pre-training targets: soundfile first (opened by
Python so that paths which are not valid UTF-8 work), torchaudio for the formats libsndfile lacks
(MELD's mp4). A file that gives no usable audio raises `AudioError` naming the file, with a short
`reason` (unreadable, empty, nan) that batch jobs count and list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

from care_core.constants import SAMPLE_RATE


class AudioError(ValueError):
    """An audio file that cannot be used: unreadable, empty, or with non-finite samples."""

    def __init__(self, path, problem: str, reason: str = "unreadable"):
        self.path, self.problem, self.reason = str(path), problem, reason
        super().__init__(f"{path}: {problem}")


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
        raise AudioError(path, "file not found", "unreadable") from None
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


def read_segments(path: Path, segments: Segments) -> Tuple[np.ndarray, int]:
    """The whole file, or the (start, end)-second pieces concatenated (DAIC-WOZ windows span turns)."""
    if not segments:
        data, sr = _read(path, None, None)
    else:
        parts = [_read(path, s, e) for s, e in segments]
        sr = parts[0][1]
        data = np.concatenate([d for d, _ in parts], axis=0)
    if data.size == 0:
        raise AudioError(path, "no samples" if not segments else f"no samples in segment(s) {list(segments)}", "empty")
    if not np.isfinite(data).all():
        raise AudioError(path, "NaN or infinite samples", "nan")
    return data, sr


def read_mono(path, sample_rate: int = SAMPLE_RATE, segments: Segments = None) -> Tuple[torch.Tensor, int, int]:
    """(1-D float32 waveform at `sample_rate`, the file's own rate, its channel count): channels
    averaged, then resampled with torchaudio."""
    data, sr = read_segments(Path(path), segments)
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))
    if sr != sample_rate:
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
    return wav, sr, int(data.shape[1])
