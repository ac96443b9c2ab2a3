"""The SUPERB-style probe (mean pooling, Linear-ReLU-Linear), shared by the s3prl expert and the
sweep's fast path.

s3prl's Featurizer already mixes the 13 hidden states with softmax weights; what remains is
`ProbeHead`: mean over the *valid* frames of each utterance (padding would otherwise dilute short
utterances), then Linear(D, 256) → ReLU → Linear(256, n_outputs). `LayerWeights` is the same
softmax mix for callers that hold all layers themselves (the sweep caches per-layer pooled
features: mean pooling commutes with a weighted sum, so mixing pooled layers equals pooling the mix).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


def masked_mean(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) features, (B,) valid frame counts → (B, D) mean over each utterance's valid frames."""
    if features.dim() != 3:
        raise ValueError(f"expected (B, T, D) features, got shape {tuple(features.shape)}")
    lengths = torch.as_tensor(lengths, device=features.device)
    if lengths.shape != (features.shape[0],):
        raise ValueError(f"expected ({features.shape[0]},) lengths, got {tuple(lengths.shape)}")
    if (lengths < 1).any():
        raise ValueError("every utterance needs at least one valid frame")
    mask = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
    summed = features.masked_fill(~mask[..., None], 0.0).sum(dim=1)
    return summed / lengths[:, None].to(features.dtype)


class ProbeHead(nn.Module):
    """Masked mean → Linear(D, hidden) → ReLU → (Dropout) → Linear(hidden, n_outputs)."""

    def __init__(self, input_dim: int, n_outputs: int, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_outputs))

    def forward(self, features: Union[torch.Tensor, Sequence[torch.Tensor]], lengths=None) -> torch.Tensor:
        """`features`: padded (B, T, D) with `lengths`, or s3prl's list of (T_i, D) tensors."""
        if isinstance(features, (list, tuple)):
            lengths = torch.tensor([len(f) for f in features], device=features[0].device)
            features = nn.utils.rnn.pad_sequence(list(features), batch_first=True)
        elif lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], device=features.device)
        return self.mlp(masked_mean(features, lengths))

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) already pooled features (the sweep's cached path)."""
        return self.mlp(pooled)


class LayerWeights(nn.Module):
    """Softmax-normalised weights over L layers, zero-initialised like s3prl's Featurizer."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_layers))

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """(L, ...) → (...): convex combination over the first axis."""
        if stacked.shape[0] != self.weights.numel():
            raise ValueError(f"expected {self.weights.numel()} layers, got {stacked.shape[0]}")
        w = F.softmax(self.weights, dim=0)
        return (w.view(-1, *([1] * (stacked.dim() - 1))) * stacked).sum(dim=0)

    def normalized(self) -> torch.Tensor:
        return F.softmax(self.weights.detach(), dim=0)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 − mean CCC over target columns: the paper trains MSP-IMPROV "to increase the CCC"."""
    mp, mt = pred.mean(0), target.mean(0)
    vp, vt = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - mp) * (target - mt)).mean(0)
    return 1 - (2 * cov / (vp + vt + (mp - mt) ** 2 + eps)).mean()
