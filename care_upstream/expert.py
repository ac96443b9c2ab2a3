"""s3prl upstream expert for CARE (SPEC §2): 13 hidden states per utterance batch.

Follows s3prl's ``upstream/wavlm/expert.py`` (subclass of ``UpstreamBase``, ``get_downsample_rates``
= 320, ``forward(wavs: List[Tensor])``) but returns the hidden states directly instead of
collecting them with forward hooks.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from s3prl.upstream.interfaces import UpstreamBase

from care_core.constants import SAMPLE_RATE, VARIANTS
from .model import CARE


class UpstreamExpert(UpstreamBase):
    """``ckpt``: a folder with config.json + model.safetensors, such a .safetensors file, or a
    ``{"config", "model"}`` torch file. ``variant``: "care" (13 x 1536 for the base model),
    "care_acoustic" or "care_semantic" (13 x 768). ``model_config`` is accepted because s3prl's
    runner always passes it; CARE keeps its config next to the weights, so it is not used."""

    def __init__(self, ckpt: str, model_config: Optional[str] = None, variant: str = "care", **kwargs) -> None:
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"unknown CARE variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.model = CARE.from_pretrained(ckpt) if not isinstance(ckpt, CARE) else ckpt
        self.model.eval()

    def get_downsample_rates(self, key: str) -> int:
        return self.model.config.downsample_rate

    def forward(self, wavs: List[torch.Tensor], sample_rate: int = SAMPLE_RATE) -> Dict[str, List[torch.Tensor]]:
        hidden_states, _ = self.model.extract(wavs, sample_rate=sample_rate, variant=self.variant)
        return {"hidden_states": hidden_states}
