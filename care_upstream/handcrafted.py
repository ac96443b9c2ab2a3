"""Handcrafted baselines as s3prl upstreams: openSMILE eGeMAPSv02 (25-d) and ComParE_2016 (65-d)
low-level descriptors (LLDs) at 100 Hz, the standard feature sets of the emotion field.

Why a fixed scale: the SUPERB probe (AdamW 1e-4, no input normalisation) learns poorly from raw LLD
scales (loudness about 1, F0 about 30 semitones, formant frequencies about 1000 Hz), and a
per-utterance normalisation would erase the time-mean that the probe pools over (the failure of
s3prl's fbank/mfcc upstreams on this benchmark). So every dimension is standardised with one fixed
mean and standard deviation measured on real read speech: ``care_upstream/handcrafted_scale.py``,
written by ``benchmarks/handcrafted_scale.py``, which records the files it was computed from.
``-u egemaps_raw`` / ``-u compare_raw`` give the unscaled LLDs.

Frames: output frame i stands for samples [160 i, 160 (i + 1)), as s3prl's Featurizer assumes for a
downsample rate of 160; an utterance of n samples gets ``round(n / 160)`` frames whatever the batch.
openSMILE's frame j starts at sample 160 j and spans up to 60 ms (pitch, jitter, formants), so its
centre is about 2.5 frames later: output frame i takes openSMILE frame i - 2, repeating the first
and last frames where openSMILE's windows do not reach (2-3 frames at each end). Utterances shorter
than one 60 ms window are zero-padded to it, because openSMILE fills NaN below that.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from s3prl.upstream.interfaces import UpstreamBase

from care_core.constants import SAMPLE_RATE

HOP = 160  # openSMILE's 10 ms frame step at 16 kHz: the downsample rate s3prl sees
FRAME_OFFSET = 2  # openSMILE frame j is centred near output frame j + 2.5 (see module docstring)
MIN_SAMPLES = 960  # 60 ms, openSMILE's longest LLD window: shorter input yields NaN frames
CACHE_BYTES = 1 << 30  # features kept per expert (least recently used dropped): ~1 GiB holds IEMOCAP's eGeMAPS
OPENSMILE_HELP = "pip install opensmile==2.6.0 (a dependency of care-superb; reinstall with `pip install -e .`)"


@dataclass(frozen=True)
class FeatureSet:
    """One openSMILE LLD set offered as an upstream."""

    name: str  # s3prl upstream name (-u)
    label: str  # table label
    smile_set: str  # opensmile.FeatureSet member
    dim: int


FEATURE_SETS: Dict[str, FeatureSet] = {
    "egemaps": FeatureSet("egemaps", "eGeMAPS", "eGeMAPSv02", 25),
    "compare": FeatureSet("compare", "ComParE", "ComParE_2016", 65),
}


class OpenSmileUnavailable(ImportError):
    """openSMILE is not importable, so the handcrafted upstreams cannot run."""


def make_smile(feature_set: FeatureSet):
    """An openSMILE extractor of the set's low-level descriptors (one per expert: it holds no state
    between calls)."""
    try:
        import opensmile
    except ImportError as err:
        raise OpenSmileUnavailable(
            f"-u {feature_set.name} computes openSMILE {feature_set.smile_set} features, but the `opensmile` "
            f"package cannot be imported ({err}); install it: {OPENSMILE_HELP}"
        ) from None
    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set.smile_set),
        feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
    )


def frame_count(n_samples: int) -> int:
    """Frames of an n-sample utterance, exactly as s3prl's Featurizer trims them (``round``, ties to even)."""
    return round(n_samples / HOP)


def lld_frames(smile, wav: np.ndarray) -> np.ndarray:
    """(frame_count(len(wav)), dim) raw LLDs of one 16 kHz mono utterance, aligned to 160-sample frames."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    n = len(wav)
    if n < MIN_SAMPLES:
        wav = np.concatenate([wav, np.zeros(MIN_SAMPLES - n, dtype=np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Segment too short": cannot happen after the padding
        frames = smile.process_signal(wav, SAMPLE_RATE).to_numpy(dtype=np.float32)
    if frames.ndim != 2 or frames.shape[0] == 0 or not np.isfinite(frames).all():
        raise ValueError(f"openSMILE returned {frames.shape} frames with non-finite values for a {n}-sample utterance")
    index = np.clip(np.arange(frame_count(n)) - FRAME_OFFSET, 0, frames.shape[0] - 1)
    return frames[index]


def load_scale(feature_set: FeatureSet, names: Sequence[str]):
    """(mean, std) float32 vectors for the set, checked against openSMILE's own feature names so that
    an openSMILE version with other descriptors cannot be scaled with the wrong constants."""
    from .handcrafted_scale import SCALE

    rows = SCALE[feature_set.name]["lld"]
    if [r[0] for r in rows] != list(names):
        raise ValueError(
            f"care_upstream/handcrafted_scale.py was measured on other {feature_set.smile_set} descriptors than this "
            f"openSMILE gives; rerun benchmarks/handcrafted_scale.py (or use -u {feature_set.name}_raw)"
        )
    return np.asarray([r[1] for r in rows], dtype=np.float32), np.asarray([r[2] for r in rows], dtype=np.float32)


class HandcraftedExpert(UpstreamBase):
    """openSMILE LLDs as one hidden state ``(B, T, dim)``, T = round(max length / 160).

    ``padding_exact``: every utterance is computed alone and its frames are followed by zeros, so a
    padded batch gives each utterance exactly its solo frames (contract shared with the sweep).
    ``scale``: standardise with the fixed constants (default) or return raw LLDs.
    ``cache_bytes``: s3prl's runner re-extracts every utterance at every step, and openSMILE costs
    about 30 ms per second of audio on one core, so the raw frames of each waveform seen are kept
    (keyed by a hash of its samples, so a different crop is a different entry) up to this many bytes.
    ``ckpt`` and ``model_config`` are accepted because s3prl's runner always passes them (None
    without ``-k``); there are no weights, so a checkpoint given with ``-k`` is refused, not ignored.
    """

    padding_exact = True

    def __init__(self, feature_set: str, scale: bool = True, cache_bytes: int = CACHE_BYTES,
                 ckpt: Optional[str] = None, model_config: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown openSMILE feature set {feature_set!r}; expected one of {sorted(FEATURE_SETS)}")
        self.feature_set = FEATURE_SETS[feature_set]
        if ckpt:
            raise ValueError(f"-u {feature_set} computes openSMILE features and has no weights: drop -k {ckpt}")
        self.smile = make_smile(self.feature_set)
        names = list(self.smile.feature_names)
        if len(names) != self.feature_set.dim:
            raise ValueError(f"openSMILE {self.feature_set.smile_set} gives {len(names)} LLDs, expected {self.feature_set.dim}")
        self.feature_names = names
        self.scaled = bool(scale)
        mean, std = load_scale(self.feature_set, names) if scale else (np.zeros(len(names)), np.ones(len(names)))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32), persistent=False)
        self.cache_bytes = int(cache_bytes)
        self._cache: "OrderedDict[bytes, np.ndarray]" = OrderedDict()
        self._cached = 0

    def get_downsample_rates(self, key: str) -> int:
        return HOP

    def utterance(self, wav: torch.Tensor) -> torch.Tensor:
        """(frame_count(len(wav)), dim) features of one utterance, scaled if the expert scales."""
        if wav.dim() != 1:
            raise ValueError(f"expected a 1-D waveform per utterance, got shape {tuple(wav.shape)}")
        return (torch.from_numpy(self._raw(wav.detach().cpu().float().numpy())) - self.mean.cpu()) / self.std.cpu()

    def _raw(self, wav: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(wav).tobytes(), digest_size=16).digest()
        frames = self._cache.get(key)
        if frames is not None:
            self._cache.move_to_end(key)
            return frames
        frames = lld_frames(self.smile, wav)
        if frames.nbytes <= self.cache_bytes:
            self._cache[key] = frames
            self._cached += frames.nbytes
            while self._cached > self.cache_bytes:
                self._cached -= self._cache.popitem(last=False)[1].nbytes
        return frames

    def forward(self, wavs: List[torch.Tensor]) -> Dict[str, object]:
        if not wavs:
            raise ValueError("empty batch")
        batch = torch.nn.utils.rnn.pad_sequence([self.utterance(w) for w in wavs], batch_first=True).to(wavs[0].device)
        return {"hidden_states": [batch], "last_hidden_state": batch}
