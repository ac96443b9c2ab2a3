"""Configuration of the CARE model (architecture: docs/architecture.md).

The two teacher configurations are kept as plain Hugging Face config dicts (``WavLMConfig.to_dict()``
and e.g. ``RobertaConfig.to_dict()``) so that a checkpoint's ``config.json`` rebuilds exactly the
modules the teachers had, and so that any HF text encoder can stand in for RoBERTa.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from care_core.constants import SAMPLE_RATE, VARIANTS  # noqa: F401 (re-exported)

# Exact roberta-base config.json values (https://huggingface.co/roberta-base/blob/main/config.json);
# the HF RobertaConfig() defaults differ (BERT values: 512 positions, 2 token types, eps 1e-12).
_ROBERTA_BASE = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=514,
    type_vocab_size=1,
    initializer_range=0.02,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    architectures=["RobertaForMaskedLM"],
)

# microsoft/wavlm-base: the architecture fields equal the WavLMConfig() defaults (conv 7 x 512,
# strides 5,2,2,2,2,2,2, kernels 10,3,3,3,3,2,2, no conv bias, group norm, 12 x 768, 12 heads,
# 3072 FFN, pos conv 128/16, 320 buckets, max distance 800, eps 1e-5). Only dropouts differ.
_WAVLM_BASE_OVERRIDES = dict(
    activation_dropout=0.0,
    feat_proj_dropout=0.1,
    layerdrop=0.05,
    architectures=["WavLMModel"],
)


def _wavlm_dict(**overrides: Any) -> dict:
    from transformers import WavLMConfig

    return WavLMConfig(**overrides).to_dict()


def _text_dict(model_type: str, **overrides: Any) -> dict:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **overrides).to_dict()


def conv_output_length(length: int, kernel: int, stride: int) -> int:
    """Frames a strided conv without padding gives (torch/torchaudio floor formula), at least 0."""
    return max((length - kernel) // stride + 1, 0)


@dataclass
class CareConfig:
    """Everything needed to rebuild a CARE model; serialised as ``config.json``.

    ``text_layer_start`` says which teacher text layers the semantic encoder starts from
    (0-based); ``None`` means the last ``n_semantic`` layers (RoBERTa-base: layers 7-12).
    The adapter fields follow the authors' ``model_pase.py``: Conv1d(k=5, s=3) before each text
    layer, ConvTranspose1d(k=5, s=3, output_padding=1) after it.
    """

    wavlm: dict = field(default_factory=lambda: _wavlm_dict(**_WAVLM_BASE_OVERRIDES))
    text: dict = field(default_factory=lambda: _text_dict("roberta", **_ROBERTA_BASE))
    n_common: int = 6
    n_acoustic: int = 6
    n_semantic: int = 6
    text_layer_start: Optional[int] = None
    adapter_kernel: int = 5
    adapter_stride: int = 3
    adapter_output_padding: int = 1
    acoustic_target_dim: int = 256
    semantic_target_dim: int = 768
    freeze_frontend: bool = True
    acoustic_grad_to_common: bool = False
    normalize_waveform: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.wavlm, dict) or self.wavlm.get("model_type") != "wavlm":
            raise ValueError("CareConfig.wavlm must be a WavLMConfig dict (model_type 'wavlm')")
        if not isinstance(self.text, dict) or "model_type" not in self.text:
            raise ValueError("CareConfig.text must be a Hugging Face config dict with a 'model_type'")
        for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
            if name not in self.text:
                raise ValueError(f"CareConfig.text lacks {name!r}: not a BERT-like encoder config")
        # JSON-normalise (e.g. int id2label keys become strings) so that a config.json round
        # trip compares equal; the HF config classes accept either form.
        self.wavlm = json.loads(json.dumps(self.wavlm))
        self.text = json.loads(json.dumps(self.text))
        w = self.wavlm
        conv_dim, kernel, stride = w.get("conv_dim"), w.get("conv_kernel"), w.get("conv_stride")
        if not (conv_dim and kernel and stride) or not (len(conv_dim) == len(kernel) == len(stride)):
            raise ValueError(
                f"wavlm conv_dim/conv_kernel/conv_stride must be non-empty and equally long, "
                f"got {len(conv_dim or [])}/{len(kernel or [])}/{len(stride or [])}"
            )
        if w.get("feat_extract_norm") not in ("group", "layer"):
            raise ValueError(f"wavlm feat_extract_norm must be 'group' or 'layer', got {w.get('feat_extract_norm')!r}")
        if w.get("do_stable_layer_norm"):
            raise ValueError("wavlm do_stable_layer_norm=True (WavLM-large layout) is not supported")
        if w["hidden_size"] % w["num_attention_heads"]:
            raise ValueError("wavlm hidden_size must be divisible by num_attention_heads")
        for name in ("n_common", "n_acoustic", "n_semantic", "adapter_kernel", "adapter_stride",
                     "acoustic_target_dim", "semantic_target_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CareConfig.{name} must be a positive int, got {value!r}")
        if not 0 <= self.adapter_output_padding < self.adapter_stride:
            raise ValueError(
                f"adapter_output_padding must be in [0, adapter_stride={self.adapter_stride}), "
                f"got {self.adapter_output_padding}"
            )
        n_text = self.text["num_hidden_layers"]
        if self.text_layer_start is None:
            self.text_layer_start = n_text - self.n_semantic
        if not 0 <= self.text_layer_start <= n_text - self.n_semantic:
            raise ValueError(
                f"text_layer_start={self.text_layer_start} with n_semantic={self.n_semantic} needs text "
                f"layers beyond the teacher's {n_text}"
            )

    # ---- derived quantities -------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.wavlm["hidden_size"]

    @property
    def text_hidden_size(self) -> int:
        return self.text["hidden_size"]

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame: the product of the conv strides (320 for WavLM)."""
        return math.prod(self.wavlm["conv_stride"])

    def num_frames(self, num_samples: int) -> int:
        """Front-end frames for ``num_samples`` samples (HF ``_get_feat_extract_output_lengths``)."""
        n = num_samples
        for k, s in zip(self.wavlm["conv_kernel"], self.wavlm["conv_stride"]):
            n = conv_output_length(n, k, s)
        return n

    def adapter_frames(self, num_frames: int) -> int:
        """Frames the text layers see for a ``num_frames`` long utterance (pre-adapter conv)."""
        return conv_output_length(num_frames, self.adapter_kernel, self.adapter_stride)

    def min_samples(self, variant: str = "care") -> int:
        """Shortest input that gives one frame, in every variant (400 samples for WavLM): the
        semantic branch pads a shorter-than-one-adapter-window utterance itself."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        n = 1
        for k, s in reversed(list(zip(self.wavlm["conv_kernel"], self.wavlm["conv_stride"]))):
            n = (n - 1) * s + k
        return n

    # ---- factories ----------------------------------------------------------------------
    @classmethod
    def base(cls, **kwargs: Any) -> "CareConfig":
        """Full size: WavLM-base front end and layers + RoBERTa-base layers 7-12 (the paper's model)."""
        return cls(**kwargs)

    @classmethod
    def tiny(cls, text: str = "roberta", **kwargs: Any) -> "CareConfig":
        """A few-hundred-k parameter model with the real layer counts (13 hidden states), for tests.

        ``text="minilm"`` gives a 6-layer BERT whose width (24) differs from the audio width (32),
        which exercises the hidden <-> d_text adapters and the semantic head projection.
        The conv strides and kernels stay WavLM's so frame counts are the real ones.
        """
        wavlm = _wavlm_dict(
            conv_dim=[16] * 7,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            num_buckets=32,
            max_bucket_distance=64,
            layerdrop=0.0,
        )
        if text == "roberta":
            text_cfg = _text_dict(
                "roberta", **{**_ROBERTA_BASE, "vocab_size": 64, "hidden_size": 32, "num_attention_heads": 4,
                              "intermediate_size": 64, "max_position_embeddings": 66}
            )
        elif text == "minilm":
            text_cfg = _text_dict(
                "bert", vocab_size=64, hidden_size=24, num_hidden_layers=6, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=64,
            )
        else:
            raise ValueError(f"tiny text must be 'roberta' or 'minilm', got {text!r}")
        kwargs.setdefault("acoustic_target_dim", 8)
        kwargs.setdefault("semantic_target_dim", text_cfg["hidden_size"])
        return cls(wavlm=wavlm, text=text_cfg, **kwargs)

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> "CareConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown CareConfig fields: {unknown}")
        return cls(**copy.deepcopy(d))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CareConfig":
        return cls.from_dict(json.loads(text))

    def wavlm_config(self):
        """The HF ``WavLMConfig`` the audio modules are built from."""
        from transformers import WavLMConfig

        return WavLMConfig.from_dict(self.wavlm)

    def text_config(self):
        """The HF text-encoder config the semantic layers are built from."""
        from transformers import AutoConfig

        d = dict(self.text)
        return AutoConfig.for_model(d.pop("model_type"), **d)
