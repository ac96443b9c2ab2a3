"""The one place that says how many 50 Hz frames CARE produces for a waveform.

Targets are cut to exactly this count so that a stored acoustic target lines up frame for frame with
the model output. Frame ``t`` covers samples ``[320 t, 320 t + 400)`` of the 16 kHz waveform; a
trainer that crops the waveform at sample ``s`` (a multiple of the hop) crops targets at ``s // 320``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ConvFrontEnd:
    """Kernel sizes and strides of the WavLM-base conv front end that CARE keeps frozen (SPEC §1)."""

    kernels: Tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    strides: Tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)

    def __post_init__(self):
        if len(self.kernels) != len(self.strides):
            raise ValueError(f"conv front end: {len(self.kernels)} kernels but {len(self.strides)} strides")

    @property
    def hop(self) -> int:
        hop = 1
        for s in self.strides:
            hop *= s
        return hop

    @property
    def receptive_field(self) -> int:
        field, jump = 1, 1
        for k, s in zip(self.kernels, self.strides):
            field += (k - 1) * jump
            jump *= s
        return field


WAVLM_FRONT_END = ConvFrontEnd()


def care_frame_count(n_samples: int, front_end: ConvFrontEnd = WAVLM_FRONT_END) -> int:
    """Frames the conv front end yields for ``n_samples`` at 16 kHz: floor((N - 400) / 320) + 1, >= 0.

    Applied layer by layer (``floor((L - k) / s) + 1`` each, as torchaudio's ConvLayerBlock does);
    for stacked unpadded convs this equals the closed form with the receptive field and the hop.
    """
    length = int(n_samples)
    for k, s in zip(front_end.kernels, front_end.strides):
        length = max((length - k) // s + 1, 0)
    return length
