"""Semantic encoder: frozen text-transformer layers wrapped in time adapters (paper §II, Fig. 1).

Before each text layer a Conv1d (k=5, stride 3) takes the 50 Hz audio frames to ~17 Hz and the
audio width to the text width; after it a ConvTranspose1d brings both back and the result is
cropped or zero-padded to the utterance's frame count T, as in the authors' ``model_pase.py``.
In a padded batch each utterance's lengths are carried through both convs so that it gets exactly
what it would get alone (zeros beyond its own transposed-conv output).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from .attention import TextLayer
from .frontend import conv_lengths, frame_mask


def build_text_layers(text_config, start: int, count: int) -> nn.ModuleList:
    """``count`` freshly initialised BERT-like text layers (``care_upstream.attention.TextLayer``).

    Only the layer modules exist (no embeddings, no pooler). ``start`` is recorded by the caller
    for weight loading; all layers of these encoders share one architecture. Initialised as HF
    initialises BERT (normal(0, initializer_range) weights, zero biases, unit LayerNorms), so a
    random CARE's text layers look like the untrained teacher's.
    """
    layers = nn.ModuleList([TextLayer(text_config) for _ in range(count)])
    std = getattr(text_config, "initializer_range", 0.02)
    for module in layers.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return layers


class SemanticEncoder(nn.Module):
    """down[i] -> text layers[i] -> up[i], each output cropped / zero-padded to T frames."""

    def __init__(self, hidden: int, text_config, n_layers: int, kernel: int, stride: int,
                 output_padding: int, target_dim: int, text_layer_start: int = 0) -> None:
        super().__init__()
        d_text = text_config.hidden_size
        self.kernel, self.stride, self.output_padding = kernel, stride, output_padding
        self.text_layer_start = text_layer_start
        self.down = nn.ModuleList([nn.Conv1d(hidden, d_text, kernel, stride=stride) for _ in range(n_layers)])
        self.layers = build_text_layers(text_config, text_layer_start, n_layers)
        self.up = nn.ModuleList(
            [nn.ConvTranspose1d(d_text, hidden, kernel, stride=stride, output_padding=output_padding)
             for _ in range(n_layers)]
        )
        self.head_proj = nn.Identity() if hidden == target_dim else nn.Linear(hidden, target_dim)

    def up_lengths(self, down_lengths: torch.Tensor) -> torch.Tensor:
        """Transposed-conv output length (L - 1) * s + k + output_padding (0 stays 0)."""
        out = (down_lengths - 1) * self.stride + self.kernel + self.output_padding
        return torch.where(down_lengths > 0, out, torch.zeros_like(out))

    def down_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Adapter frames of each utterance: at least one, since an utterance shorter than the
        kernel is zero-padded to one window (what it gets alone and in any padded batch)."""
        return conv_lengths(frame_lengths.clamp(min=self.kernel), self.kernel, self.stride)

    def forward(self, x: torch.Tensor, frame_lengths: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """x (B, T, hidden) common-encoder output; frame_lengths None when no utterance is padded.

        Returns one (B, T, hidden) tensor per text layer: T is the frame count of the input,
        whatever its length (an utterance of 1 to kernel-1 frames still gets one text frame).
        """
        b, t, _ = x.shape
        width = max(t, self.kernel)  # a shorter input gets zero frames beyond it, like batch padding
        outputs = []
        if frame_lengths is not None:
            valid_t = frame_mask(frame_lengths, width)[..., None].to(x.dtype)
            down_len = self.down_lengths(frame_lengths)
            keep_len = torch.minimum(self.up_lengths(down_len), frame_lengths)
            n_down = (width - self.kernel) // self.stride + 1
            valid_down = frame_mask(down_len, n_down)
            # Additive (B, 1, 1, L) mask for the text layers' SDPA: 0 keep, very negative pad.
            additive = torch.zeros(b, 1, 1, n_down, dtype=x.dtype, device=x.device)
            additive = additive.masked_fill(~valid_down[:, None, None, :], torch.finfo(x.dtype).min)
            valid_down = valid_down[:, None, :].to(x.dtype)
            valid_keep = frame_mask(keep_len, t)[..., None].to(x.dtype)
        for down, layer, up in zip(self.down, self.layers, self.up):
            h = nn.functional.pad(x, (0, 0, 0, width - t)) if width > t else x
            if frame_lengths is not None:
                h = h * valid_t
            h = down(h.transpose(1, 2)).transpose(1, 2)
            h = layer(h, additive if frame_lengths is not None else None)
            h = h.transpose(1, 2)
            if frame_lengths is not None:
                h = h * valid_down
            h = up(h).transpose(1, 2)
            if h.shape[1] >= t:
                h = h[:, :t]
            else:
                h = torch.cat([h, h.new_zeros(b, t - h.shape[1], h.shape[2])], dim=1)
            if frame_lengths is not None:
                h = h * valid_keep
            outputs.append(h)
            x = h
        return outputs
