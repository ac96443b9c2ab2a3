"""Acoustic targets: 100 Hz frame features -> 50 Hz, per-utterance normalisation, CARE frame count.

As in the paper (PASE+ frames down-sampled by 2 to 50 Hz) and the authors' dataset code: take every 2nd 100 Hz frame, normalise each dimension over
the utterance as (x - mean) / (std + 1) (population std; the +1 keeps near-constant dimensions such
as F0 in unvoiced speech from blowing up), then cut to the model's frame count. Normalising before
cutting matches the authors, who normalise the whole file and crop in the collate function. When a
teacher yields fewer frames than the model (eGeMAPS' 60 ms windows end one frame early), the tail is
padded with zeros, which after normalisation is the utterance mean (the authors pad with zeros too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pretrain.targets.frames import SAMPLE_RATE, care_frame_count
from pretrain.targets.transcripts import TeacherUnavailableError


@dataclass(frozen=True)
class AcousticSettings:
    kind: str = "pase+"  # "pase+" | "egemaps"
    subsample: int = 2  # 100 Hz teacher frames -> 50 Hz model frames
    std_offset: float = 1.0  # (x - mean) / (std + std_offset)
    pase_ckpt: Optional[str] = None
    pase_config: Optional[str] = None


ACOUSTIC_KINDS = ("pase+", "egemaps")


def normalise_utterance(x: np.ndarray, std_offset: float = 1.0) -> np.ndarray:
    """(x - mean) / (std + std_offset) per feature dimension over time; x is (T, F)."""
    x = np.asarray(x, dtype=np.float64)
    return ((x - x.mean(axis=0)) / (x.std(axis=0) + std_offset)).astype(np.float32)


def to_model_frames(features_100hz: np.ndarray, n_samples: int, settings: AcousticSettings) -> tuple[np.ndarray, int]:
    """(T100, F) teacher frames -> (care_frame_count(n_samples), F) normalised target, and frames padded."""
    if features_100hz.ndim != 2 or features_100hz.shape[0] == 0:
        raise ValueError(f"teacher features must be (T>0, F), got {features_100hz.shape}")
    x = normalise_utterance(features_100hz[:: settings.subsample], settings.std_offset)
    t = care_frame_count(n_samples)
    if x.shape[0] >= t:
        return np.ascontiguousarray(x[:t]), 0
    pad = t - x.shape[0]
    return np.concatenate([x, np.zeros((pad, x.shape[1]), dtype=np.float32)]), pad


class EgemapsExtractor:
    """openSMILE eGeMAPSv02 low-level descriptors: 25 dimensions at 100 Hz (paper Fig. 3 ablation)."""

    dim = 25
    min_samples = 0

    def __init__(self):
        try:
            import opensmile
        except ImportError as err:
            raise TeacherUnavailableError("--acoustic egemaps needs `pip install opensmile==2.6.0`") from err
        self.smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        )

    def frames_100hz(self, wav: np.ndarray) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Segment too short, filling with NaN": caught as nan below
            df = self.smile.process_signal(np.asarray(wav, dtype=np.float32), SAMPLE_RATE)
        return df.to_numpy(dtype=np.float32)

class PasePlusExtractor:
    """PASE+ (256-d, 100 Hz: hop 160), the plain-torch rebuild of `pretrain.targets.pase_plus`.

    ``frontend`` injects any module mapping (1, 1, N) -> (1, 256, T100) (tests, notebooks);
    otherwise ``ckpt`` (FE_e199.ckpt) and ``config`` (PASE+.cfg) are loaded with a strict key check.
    """

    dim = 256

    def __init__(self, ckpt: Optional[str] = None, config: Optional[str] = None, device: str = "cpu", frontend=None):
        self.device = device
        if frontend is None:
            frontend = self._load(ckpt, config)
        self.frontend = frontend.to(device).eval()
        # reflect padding needs 471 samples; shorter audio is skipped as too short, not crashed on
        self.min_samples = int(getattr(frontend, "min_samples", 0))

    @staticmethod
    def _load(ckpt: Optional[str], config: Optional[str]):
        if not ckpt or not config:
            raise TeacherUnavailableError(
                "--acoustic pase+ needs --pase-ckpt FE_e199.ckpt and --pase-config PASE+.cfg (the PASE+ release of "
                "github.com/santi-pdp/pase, also linked from s3prl/upstream/pase/hubconf.py); without them use "
                "--acoustic egemaps"
            )
        from pretrain.targets.pase_plus import load_pase_plus

        return load_pase_plus(ckpt, config)

    def frames_100hz(self, wav: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(wav, dtype=np.float32)).to(self.device).view(1, 1, -1)
            y = self.frontend(x)  # (1, 256, T100)
        if y.ndim != 3 or y.shape[1] != self.dim:
            raise ValueError(f"PASE+ returned shape {tuple(y.shape)}, expected (1, {self.dim}, T)")
        return y[0].transpose(0, 1).float().cpu().numpy()


def build_acoustic(settings: AcousticSettings, device: str = "cpu"):
    if settings.kind == "egemaps":
        return EgemapsExtractor()
    if settings.kind == "pase+":
        return PasePlusExtractor(settings.pase_ckpt, settings.pase_config, device)
    raise ValueError(f"--acoustic {settings.kind!r}: choose one of {', '.join(ACOUSTIC_KINDS)}")
