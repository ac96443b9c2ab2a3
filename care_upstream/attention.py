"""CARE's transformer layers, with attention through ``torch.nn.functional.scaled_dot_product_attention``.

Two layer kinds, each with the parameter names of its Hugging Face counterpart, so teacher weights
(``care_upstream.load``), the authors' checkpoint and every saved CARE folder load unchanged:

* ``WavLMLayer`` = transformers' ``WavLMEncoderLayer`` (post-LN, gated relative position bias).
  HF runs it through ``F.multi_head_attention_forward``, which repeats the position bias per
  utterance and merges a bool key-padding mask into the float bias on every call. Here the bias
  stays (heads, T, T), the gate broadcasts it to (B, heads, T, T), and padding keys are filled
  with -inf in that same tensor: one float mask, one SDPA call.
* ``TextLayer`` = a BERT/RoBERTa ``encoder.layer[i]`` (post-LN). Written out rather than taken from
  ``AutoModel`` so that the attention kernel does not depend on which implementation transformers
  picks, and so that the same code runs under bf16 autocast on CPU and CUDA.

Both take padding as the project's one convention, ``pad_mask`` (B, T) True = pad, or an additive
mask for the text layers; both return what the next layer needs.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

# BERT-like encoders whose ``encoder.layer[i]`` is exactly TextLayer (same keys, same arithmetic).
TEXT_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")


def _activation(name):
    from transformers.activations import ACT2FN

    if not isinstance(name, str) or name not in ACT2FN:
        raise ValueError(f"unsupported activation {name!r}; expected one of transformers' ACT2FN names")
    return ACT2FN[name]


def _mask_dtype(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """SDPA wants a float mask in the query's dtype (bf16 under autocast)."""
    return mask if mask.dtype == like.dtype else mask.to(like.dtype)


class WavLMSelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias (HF ``WavLMAttention``)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, num_buckets: int, max_distance: int,
                 has_relative_position_bias: bool) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"hidden size {embed_dim} is not divisible by {num_heads} heads")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout = dropout
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        if has_relative_position_bias:
            self.rel_attn_embed = nn.Embedding(num_buckets, num_heads)

    def relative_position_bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """T5-style log buckets, exactly as HF/UniLM WavLM compute them."""
        half = self.num_buckets // 2
        buckets = (relative > 0).to(torch.long) * half
        relative = relative.abs()
        max_exact = half // 2
        is_small = relative < max_exact
        large = torch.log(relative.float() / max_exact) / math.log(self.max_distance / max_exact) * (half - max_exact)
        large = torch.clamp((max_exact + large).to(torch.long), max=half - 1)
        return buckets + torch.where(is_small, relative, large)

    def compute_bias(self, length: int) -> torch.Tensor:
        """(heads, T, T) ungated position bias; only the layer that owns ``rel_attn_embed`` makes it."""
        pos = torch.arange(length, device=self.rel_attn_embed.weight.device)
        bucket = self.relative_position_bucket(pos[None, :] - pos[:, None])
        return self.rel_attn_embed(bucket).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None,
                position_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D); pad_mask (B, T) True = pad or None; position_bias (heads, T, T) or None
        (then this layer makes it). Returns (output (B, T, D), the ungated position bias)."""
        b, t, _ = x.shape
        if position_bias is None:
            position_bias = self.compute_bias(t)
        heads = x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        # Gate of the bias (HF steps 2-3): 8 outputs summed in two groups of 4, sigmoid, then
        # a * (b * const - 1) + 2 per head and query frame.
        proj = self.gru_rel_pos_linear(heads).view(b, self.num_heads, t, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
        mask = gate * position_bias[None]  # (B, H, T, T): the float attention mask
        if pad_mask is not None:
            mask = mask.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_mask_dtype(mask, q),
                                             dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(b, t, self.embed_dim))
        return out, position_bias


class WavLMFeedForward(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = _activation(config.hidden_act)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class WavLMLayer(nn.Module):
    """Post-LN WavLM encoder layer (WavLM-base layout); keys of HF ``WavLMEncoderLayer``."""

    def __init__(self, config, has_relative_position_bias: bool = False) -> None:
        super().__init__()
        self.attention = WavLMSelfAttention(
            config.hidden_size, config.num_attention_heads, config.attention_dropout,
            config.num_buckets, config.max_bucket_distance, has_relative_position_bias)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = WavLMFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None,
                position_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        h, position_bias = self.attention(x, pad_mask, position_bias)
        x = self.layer_norm(x + self.dropout(h))
        x = self.final_layer_norm(x + self.feed_forward(x))
        return x, position_bias


class _SelfAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        mask = None if attention_mask is None else _mask_dtype(attention_mask, q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, t, d)


class _DenseNorm(nn.Module):
    """dense -> dropout -> LayerNorm(+ residual): BERT's SelfOutput and Output."""

    def __init__(self, d_in: int, d_out: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps,
                                 config.hidden_dropout_prob)


class _Intermediate(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = _activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class TextLayer(nn.Module):
    """One post-LN BERT/RoBERTa encoder layer; keys of HF ``encoder.layer[i]``."""

    def __init__(self, config) -> None:
        super().__init__()
        check_text_config(config)
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps,
                                 config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, d_text); attention_mask additive (B, 1, 1, L) (0 keep, very negative pad) or None."""
        h = self.attention.output(self.attention.self(x, attention_mask), x)
        return self.output(self.intermediate(h), h)


def check_text_config(config) -> None:
    """Refuse text encoders whose layers are not TextLayer, naming what differs."""
    model_type = getattr(config, "model_type", None)
    if model_type not in TEXT_MODEL_TYPES:
        raise ValueError(
            f"text model type {model_type!r} is not supported: CARE needs a BERT-like encoder "
            f"({', '.join(TEXT_MODEL_TYPES)})"
        )
    position = getattr(config, "position_embedding_type", "absolute") or "absolute"
    if position != "absolute":
        raise ValueError(f"text encoder position_embedding_type={position!r} is not supported (only 'absolute')")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise ValueError("text encoder is a decoder / has cross-attention; CARE needs a plain encoder")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"text hidden_size {config.hidden_size} is not divisible by {config.num_attention_heads} heads")
