"""WavLM convolutional front end, made exact for zero-padded batches.

The modules are Hugging Face's own (so teacher weights load by name); only the way they are
called differs from ``WavLMModel``: WavLM-base normalises its first conv layer with a GroupNorm
over *time*, which in a padded batch would include the padding. Here that norm is computed over
each utterance's valid samples only, and padded frames are zeroed before the positional conv, so
each utterance gets what it would get alone.

Two things make the WavLM-base layout fast on CPU without changing the result beyond float32
rounding. The first layer (1 input channel, a per-channel norm over time) is computed folded: the
conv is linear in the waveform windows, so each channel's mean and variance follow from the
windows' mean and 10 x 10 covariance, and conv + norm become one matrix product with a per-
utterance weight and bias (a third of the time of a 1-channel conv + a 512-group GroupNorm). Its
output is channel-last, and the six 512-channel convs after it run on that layout (as 2-D
convs of height 1), which oneDNN computes about twice as fast as channel-first 1-D convs.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers.models.wavlm.modeling_wavlm import (
    WavLMFeatureEncoder,
    WavLMFeatureProjection,
    WavLMPositionalConvEmbedding,
)


def frame_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool, True where the frame is valid."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def conv_lengths(lengths: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Output lengths of an unpadded strided conv: floor((L - k) / s) + 1, clamped at 0."""
    return torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, min=0)


def masked_group_norm(x: torch.Tensor, norm: nn.GroupNorm, valid: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` with the statistics taken over valid time steps only.

    x: (B, C, T); valid: (B, T) bool. Uses ``norm``'s own groups, eps and affine parameters, so
    an unpadded utterance gives exactly ``norm(x)`` (up to float rounding).
    """
    b, c, t = x.shape
    g = norm.num_groups
    dtype = x.dtype
    xg = x.float().reshape(b, g, c // g, t)  # statistics in fp32, as autocast does for GroupNorm
    m = valid[:, None, None, :].float()
    count = m.sum(dim=(2, 3), keepdim=True) * (c // g)
    mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count
    var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count
    y = ((xg - mean) * torch.rsqrt(var + norm.eps)).reshape(b, c, t)
    if norm.affine:
        y = y * norm.weight.float()[None, :, None] + norm.bias.float()[None, :, None]
    return y.to(dtype)


def _per_channel_group_norm(norm) -> bool:
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels and norm.affine


def folded_conv_group_norm(wavs: torch.Tensor, conv: nn.Conv1d, norm: nn.GroupNorm,
                           lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``norm(conv(wavs[:, None])).transpose(1, 2)``, i.e. (B, L, C), for a 1-channel conv and a
    per-channel GroupNorm, with the statistics over each utterance's first ``lengths[b]`` output
    steps (all when None).

    y_c = w_c . u_t (+ bias, which the norm removes), so mean_c = w_c . mean(u) and
    var_c = w_c' Cov(u) w_c over the windows u_t; the normalised output is then
    (gamma_c / sd_c) w_c . (u_t - mean(u)) + beta_c: one batched matrix product.
    """
    k, s = conv.kernel_size[0], conv.stride[0]
    windows = wavs.unfold(1, k, s)  # (B, L, k), a view
    u = windows.double()
    if lengths is None:
        mean = u.mean(dim=1)
        centred = u - mean[:, None]
        cov = centred.transpose(1, 2) @ centred / u.shape[1]
    else:
        valid = frame_mask(lengths, u.shape[1])[..., None].double()
        count = lengths.double().clamp(min=1)[:, None]
        mean = (u * valid).sum(dim=1) / count
        centred = (u - mean[:, None]) * valid
        cov = centred.transpose(1, 2) @ centred / count[..., None]
    w = conv.weight[:, 0, :].double()  # (C, k)
    var = torch.einsum("ck,bkj,cj->bc", w, cov, w)
    scale = norm.weight.double() / torch.sqrt(var + norm.eps)  # (B, C)
    weight = w[None] * scale[..., None]  # (B, C, k)
    bias = norm.bias.double() - (weight @ mean[..., None])[..., 0]  # (B, C)
    dtype = torch.get_autocast_dtype(wavs.device.type) if torch.is_autocast_enabled(wavs.device.type) else wavs.dtype
    return torch.baddbmm(bias[:, None, :].to(dtype), windows.to(dtype), weight.transpose(1, 2).to(dtype))


class FrontEnd(nn.Module):
    """Conv feature encoder + feature projection + positional conv + encoder LayerNorm.

    Output = WavLM's encoder input, i.e. HF ``hidden_states[0]`` (CARE's layer 0).
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.conv_layers = WavLMFeatureEncoder(config).conv_layers
        self.feature_projection = WavLMFeatureProjection(config)
        self.pos_conv_embed = WavLMPositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        first = self.conv_layers[0]
        # WavLM-base layout: GroupNorm on the first (1-channel) conv only, plain convs after it.
        self.folded = (first.conv.in_channels == 1 and _per_channel_group_norm(getattr(first, "layer_norm", None))
                       and not any(hasattr(layer, "layer_norm") for layer in self.conv_layers[1:]))

    def _conv_stack_folded(self, wavs: torch.Tensor, lengths: Optional[torch.Tensor]):
        """The conv stack of the WavLM-base layout, channel-last throughout: (B, T, C)."""
        first = self.conv_layers[0]
        if lengths is not None:
            lengths = conv_lengths(lengths, first.conv.kernel_size[0], first.conv.stride[0])
        # (B, L, C) viewed as (B, C, 1, L) is a channels_last 4-D tensor: no copy.
        x = first.activation(folded_conv_group_norm(wavs, first.conv, first.layer_norm, lengths))
        x = x.transpose(1, 2).unsqueeze(2)
        for layer in self.conv_layers[1:]:
            conv = layer.conv
            if lengths is not None:
                lengths = conv_lengths(lengths, conv.kernel_size[0], conv.stride[0])
            x = layer.activation(nn.functional.conv2d(
                x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0])))
        return x.squeeze(2).transpose(1, 2), lengths

    def forward(self, wavs: torch.Tensor, lengths: Optional[torch.Tensor] = None):
        """wavs (B, N) zero-padded; lengths (B,) samples or None when no utterance is padded.

        Returns (features (B, T, hidden), frame_lengths (B,) or None).
        """
        if self.folded:
            x, lengths = self._conv_stack_folded(wavs, lengths)
        else:
            x = wavs[:, None, :]
            for layer in self.conv_layers:
                conv = layer.conv
                norm = getattr(layer, "layer_norm", None)
                if lengths is not None:
                    lengths = conv_lengths(lengths, conv.kernel_size[0], conv.stride[0])
                if lengths is not None and isinstance(norm, nn.GroupNorm):
                    x = conv(x)
                    x = masked_group_norm(x, norm, frame_mask(lengths, x.shape[-1]))
                    x = layer.activation(x)
                else:
                    # LayerNorm over channels and plain convs are per-frame: padding cannot leak
                    # into valid frames, whose receptive fields end before the utterance does.
                    x = layer(x)
            x = x.transpose(1, 2)
        x = self.feature_projection(x)[0]
        if lengths is not None:
            x = x * frame_mask(lengths, x.shape[1])[..., None].to(x.dtype)
        x = x + self.pos_conv_embed(x)
        x = self.layer_norm(x)
        x = self.dropout(x)
        return x, lengths
