"""How many 50 Hz frames CARE produces for a waveform: the model's own formula, imported, not copied.

Targets are cut to exactly this count so that a stored acoustic target lines up frame for frame with
the model output. For the WavLM front end it is floor((N - 400) / 320) + 1 (0 below 400 samples);
frame ``t`` covers samples ``[320 t, 320 t + 400)`` of the 16 kHz waveform, so a trainer that crops
the waveform at sample ``s`` (a multiple of 320) crops the targets at frame ``s // 320``.
"""

from __future__ import annotations

from functools import lru_cache

from care_core.constants import SAMPLE_RATE  # noqa: F401 (re-exported for the target writers)

__all__ = ["SAMPLE_RATE", "care_frame_count", "care_hop", "care_min_samples"]


@lru_cache(maxsize=1)
def _care_config():
    from care_upstream.config import CareConfig

    return CareConfig.base()


def care_frame_count(n_samples: int) -> int:
    """Front-end frames of the full-size CARE model for ``n_samples`` 16 kHz samples (>= 0)."""
    return int(_care_config().num_frames(int(n_samples)))


def care_hop() -> int:
    """Samples per model frame (320): the product of the conv strides."""
    return int(_care_config().downsample_rate)


def care_min_samples() -> int:
    """Shortest waveform that gives one model frame (the conv receptive field, 400)."""
    return int(_care_config().min_samples("care_acoustic"))
