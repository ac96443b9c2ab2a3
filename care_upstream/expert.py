"""s3prl upstream expert for CARE: 13 hidden states per utterance batch.

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
    runner always passes it; CARE keeps its config next to the weights, so it is not used.

    Returns ``hidden_states`` (the 13 states, padding frames zero) and ``last_hidden_state``, the
    13th of them: for "care" the concatenation [acoustic layer 6 | semantic layer 6], for the
    other variants that path's last layer. ``-s last_hidden_state`` selects it in s3prl's runner.
    Any utterance of at least 400 samples (one frame) works; each gets ``num_frames(len)`` frames.
    """

    padding_exact = True
    """A padded batch gives every utterance exactly the frames it gets alone, and pad frames are
    zero (the model masks the front-end norm, the attention and the adapters). Callers that would
    otherwise run utterances one by one to be safe may batch them."""

    def __init__(self, ckpt: str, model_config: Optional[str] = None, variant: str = "care", **kwargs) -> None:
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"unknown CARE variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.model = CARE.from_pretrained(ckpt) if not isinstance(ckpt, CARE) else ckpt
        self.model.eval()

    def get_downsample_rates(self, key: str) -> int:
        return self.model.config.downsample_rate

    def forward(self, wavs: List[torch.Tensor], sample_rate: int = SAMPLE_RATE) -> Dict[str, object]:
        hidden_states, _ = self.model.extract(wavs, sample_rate=sample_rate, variant=self.variant)
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}
