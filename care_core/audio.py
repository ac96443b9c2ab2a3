"""Decoding any audio file into the mono waveform at 16 kHz that every model here sees.

One decoder for corpus preparation, probing and pre-training targets: soundfile first (opened by
Python so that paths which are not valid UTF-8 work), PyAV for the formats libsndfile lacks (MELD's
mp4/AAC; PyAV's wheels carry FFmpeg's libraries, so no system ffmpeg is needed). A file that gives
no usable audio raises `AudioError` naming the file, with a short `reason` (unreadable, empty, nan,
truncated; `check_usable` adds silent and too_short) that batch jobs count and list.

A WAV cut off in transit keeps a header that promises more data than the file holds; libsndfile
reads the shorter data without a word, so the header is compared with the file size here.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

from care_core.constants import SAMPLE_RATE


#: Below this peak |amplitude| (full scale 1.0) a file is digital silence or a dead channel.
SILENCE_PEAK = 1e-4
#: One frame of the 25 ms / 400-sample analysis window every model here starts with: shorter audio
#: gives no frame at all.
MIN_SAMPLES = 400


class AudioError(ValueError):
    """An audio file that cannot be used: unreadable, empty, truncated, non-finite, silent or too short."""

    def __init__(self, path, problem: str, reason: str = "unreadable"):
        self.path, self.problem, self.reason = str(path), problem, reason
        super().__init__(f"{path}: {problem}")


def _wav_shortfall(f) -> Optional[Tuple[int, int]]:
    """(bytes the RIFF/WAVE data chunk announces, bytes the file holds after it) when fewer are
    there than announced, else None. Leaves `f` at offset 0. Sizes 0 and 0xFFFFFFFF are what
    streaming writers leave when they cannot seek back: "unknown", not a promise."""
    try:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            pos += 8
            if chunk_id == b"data":
                held = size - pos
                if chunk_size not in (0, 0xFFFFFFFF) and held < chunk_size:
                    return chunk_size, held
                return None
            pos += chunk_size + (chunk_size & 1)
        return None
    finally:
        f.seek(0)


def _read_av(path: Path, start: Optional[float], end: Optional[float]) -> Tuple[np.ndarray, int]:
    """(frames, channels) float32 and the rate of the first audio stream, decoded by PyAV.

    Channels are kept (5.1 and stereo AAC alike); `read_mono` averages them like every other file.
    """
    import av  # FFmpeg's decoders from a wheel; imported here so soundfile-only users never load it

    with open(path, "rb") as f, av.open(f) as container:
        streams = container.streams.audio
        if not streams:
            raise ValueError("no audio stream")
        stream = streams[0]
        # Planar float keeps every channel as decoded; rate and layout stay the file's own.
        resampler = av.AudioResampler(format="fltp")
        chunks = []
        sr = None
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                sr = out.sample_rate
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if sr is None:
        return np.zeros((0, 1), dtype=np.float32), int(stream.rate or 0)
    data = np.ascontiguousarray(np.concatenate(chunks, axis=1).T, dtype=np.float32)
    first = int(round(start * sr)) if start else 0
    last = int(round(end * sr)) if end is not None else len(data)
    return data[first:last], sr


def _read(path: Path, start: Optional[float], end: Optional[float]) -> Tuple[np.ndarray, int]:
    """(frames, channels) float32 and the file's rate; soundfile first, PyAV for the rest."""
    # Opened by Python, not by name: libsndfile cannot open a path that is not valid UTF-8
    # (raw CP437 folder names in CaFE), while Python's open() takes the surrogate-escaped bytes.
    try:
        with open(path, "rb") as f:
            short = _wav_shortfall(f)
            if short is not None:
                raise AudioError(path, f"truncated: the WAV header announces {short[0]} bytes of audio "
                                       f"but the file holds {short[1]}", "truncated")
            with sf.SoundFile(f) as snd:
                sr = snd.samplerate
                first = int(round(start * sr)) if start else 0
                last = min(int(round(end * sr)), snd.frames) if end is not None else snd.frames
                if last <= first:
                    return np.zeros((0, snd.channels), dtype=np.float32), sr
                snd.seek(first)
                return snd.read(last - first, dtype="float32", always_2d=True), sr
    except AudioError:
        raise
    except FileNotFoundError:
        if os.path.islink(path):
            raise AudioError(path, f"dangling symbolic link (to {os.readlink(path)}, which does not exist)",
                             "unreadable") from None
        raise AudioError(path, "file not found", "unreadable") from None
    except OSError as os_error:  # a directory, a symlink loop, no permission
        raise AudioError(path, f"cannot open ({os_error.strerror or os_error})", "unreadable") from None
    except Exception as sf_error:  # formats libsndfile does not know (mp4, ...)
        try:
            return _read_av(path, start, end)
        except Exception as av_error:
            raise AudioError(path, f"unreadable ({sf_error}; {av_error})") from None


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


def check_usable(wav, path, min_samples: int = MIN_SAMPLES, silence_peak: float = SILENCE_PEAK) -> None:
    """The one rule for "is this decoded waveform worth a label or a target": raises `AudioError`
    with reason ``silent`` (peak below `silence_peak`: its normalised features would be noise) or
    ``too_short`` (fewer than `min_samples`, 400 at 16 kHz: no model frame). `wav` is a 1-D tensor
    or array; at another rate, scale `min_samples` to it. Used by `care-superb prepare` and
    `care-pretrain targets` alike."""
    samples = np.asarray(wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else wav)
    n = int(samples.size)
    # numpy, not torch: on a busy 2-core machine torch's abs().max() took 28 ms per 10 s clip (its
    # thread pool), the whole decode + check 6 ms with numpy; prepare calls this once per segment.
    peak = float(np.abs(samples).max()) if n else 0.0
    if peak < silence_peak:
        raise AudioError(path, f"silent (peak |amplitude| {peak:.2e} < {silence_peak:.0e})", "silent")
    if n < min_samples:
        raise AudioError(path, f"too short ({n} samples < {min_samples}, one model frame)", "too_short")
