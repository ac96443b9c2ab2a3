"""The PASE+ encoder (Ravanelli et al., 2020) in plain torch: the paper's acoustic teacher, from pip alone.

The authors' code (github.com/santi-pdp/pase, ``WaveFe`` built from ``cfg/frontend/PASE+.cfg``)
predates current torch and runs its QRNN through a CUDA kernel compiled with cupy/pynvrtc, so it
does not install from PyPI. This module rebuilds the same network, module for module, so that the
official checkpoint ``FE_e199.ckpt`` (``torch.save(frontend.state_dict())`` in PASE's trainer) loads
by its own key names with a strict check, and without unpickling code (``weights_only=True``).

The network, for PASE+.cfg (kernel widths 251, 20, 11 x 6; strides 1, 10, 2, 1, 2, 1, 2, 2):

* block 0: SincNet, 64 band-pass filters whose cut-offs are the parameters, reflect-padded "same";
* blocks 1-7: reflect-padded Conv1d -> BatchNorm -> PReLU, downsampling 160x in all (100 Hz);
* a one-layer QRNN (window 2, forget + output gates) over the last block, then a 1x1 conv ``W``;
* dense skips: a 1x1 projection of each of blocks 0-6, averaged down to 100 Hz and summed in;
* an affine-free BatchNorm over the 256 outputs.

The QRNN recurrence ``c_t = f_t z_t + (1 - f_t) c_{t-1}`` runs as a loop over frames, in the order
of operations of the original CPU path, so results match the original code to float rounding.
Checked once against the authors' code with random weights (see the README, "Pre-training").
"""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HOP = 160  # product of the PASE+ strides: 100 frames per second at 16 kHz


class PaseLoadError(ValueError):
    """A PASE+ config or checkpoint that this module cannot use; the message names the file."""


@dataclass(frozen=True)
class PasePlusConfig:
    """``WaveFe`` keyword arguments, with ``WaveFe``'s own defaults for keys a cfg file leaves out.

    Only the choices PASE and PASE+ use are built; any other value of a known key is refused by
    ``from_dict`` rather than silently built differently.
    """

    kwidths: Tuple[int, ...] = (251, 10, 5, 5, 5, 5, 5, 5)
    strides: Tuple[int, ...] = (1, 10, 2, 1, 2, 1, 2, 2)
    dilations: Tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1, 1)
    fmaps: Tuple[int, ...] = (64, 64, 128, 128, 256, 256, 512, 512)
    num_inputs: int = 1
    sincnet: bool = True
    norm_type: str = "bnorm"
    pad_mode: str = "reflect"
    sr: int = 16000
    emb_dim: int = 256
    rnn_dim: Optional[int] = None
    activation: Optional[str] = None  # None = PReLU, as in WaveFe
    rnn_pool: bool = False
    rnn_layers: int = 1
    rnn_dropout: float = 0.0  # between QRNN layers while training only
    rnn_type: str = "qrnn"
    vq_K: Optional[int] = None
    vq_beta: float = 0.25
    vq_gamma: float = 0.99
    norm_out: bool = False
    tanh_out: bool = False
    resblocks: bool = False
    denseskips: bool = False
    densemerge: str = "sum"
    name: str = field(default="WaveFe", compare=False)

    # values this module builds; WaveFe accepts more (GLU, spectral norm, VQ, ResBlocks, LSTM pooling)
    _SUPPORTED = {
        "num_inputs": (1,), "norm_type": ("bnorm",), "activation": (None, "prelu"), "rnn_type": ("qrnn",),
        "vq_K": (None, 0), "resblocks": (False,), "densemerge": ("sum",), "pad_mode": ("reflect", "constant"),
    }

    @classmethod
    def pase_plus(cls) -> "PasePlusConfig":
        """The values of ``cfg/frontend/PASE+.cfg``."""
        return cls.from_dict({
            "kwidths": [251, 20, 11, 11, 11, 11, 11, 11], "strides": [1, 10, 2, 1, 2, 1, 2, 2],
            "fmaps": [64, 64, 128, 128, 256, 256, 512, 512], "rnn_dim": 512, "denseskips": True,
            "norm_out": True, "rnn_pool": True, "rnn_layers": 1,
        })

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "PASE+ config") -> "PasePlusConfig":
        if not isinstance(d, Mapping):
            raise PaseLoadError(f"{source}: expected a JSON object of WaveFe arguments, found {type(d).__name__}")
        if "name" in d and d["name"] != "WaveFe":
            raise PaseLoadError(f"{source}: frontend {d['name']!r} is not the WaveFe of PASE/PASE+")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PaseLoadError(f"{source}: unknown WaveFe argument(s) {', '.join(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        n = len(kw.get("kwidths", cls.kwidths))
        if "dilations" not in kw:
            kw["dilations"] = (1,) * n
        for key, allowed in cls._SUPPORTED.items():
            if key in kw and kw[key] not in allowed:
                raise PaseLoadError(f"{source}: {key}={kw[key]!r} is not built here (supported: {list(allowed)})")
        cfg = cls(**kw)
        lens = {k: len(getattr(cfg, k)) for k in ("kwidths", "strides", "dilations", "fmaps")}
        if len(set(lens.values())) != 1:
            raise PaseLoadError(f"{source}: kwidths, strides, dilations and fmaps differ in length ({lens})")
        for k, s, dil in zip(cfg.kwidths, cfg.strides, cfg.dilations):
            if dil > 1 and (s > 1 or k % 2 == 0):
                raise PaseLoadError(f"{source}: a dilated block needs stride 1 and an odd width (WaveFe refuses it)")
        return cfg

    @classmethod
    def from_file(cls, path) -> "PasePlusConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PaseLoadError(f"{path}: PASE+ config not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PaseLoadError(f"{path}: not a readable JSON PASE+ config ({err})") from None
        return cls.from_dict(d, str(path))

    @property
    def hop(self) -> int:
        return int(np.prod(self.strides))


class SincConv(nn.Module):
    """SincNet's band-pass filter bank (``SincConv_fast`` of PASE): each filter is the difference of
    two windowed sincs, learnt through its low cut-off and band width (Hz)."""

    def __init__(self, out_channels: int, kernel_size: int, stride: int = 1, pad_mode: str = "reflect",
                 sample_rate: int = 16000, min_low_hz: float = 50, min_band_hz: float = 50):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size  # symmetric filters
        self.stride, self.pad_mode = stride, pad_mode
        self.sample_rate, self.min_low_hz, self.min_band_hz = sample_rate, min_low_hz, min_band_hz
        # initialised equally spaced on the mel scale, as in PASE (the checkpoint overwrites them)
        mel = np.linspace(2595 * np.log10(1 + 30 / 700),
                          2595 * np.log10(1 + (sample_rate / 2 - (min_low_hz + min_band_hz)) / 700),
                          out_channels + 1)
        hz = 700 * (10 ** (mel / 2595) - 1)
        self.low_hz_ = nn.Parameter(torch.Tensor(hz[:-1]).view(-1, 1))
        self.band_hz_ = nn.Parameter(torch.Tensor(np.diff(hz)).view(-1, 1))
        k = self.kernel_size
        n_lin = torch.linspace(0, (k / 2) - 1, steps=int(k / 2))  # half a Hamming window: filters are symmetric
        self.register_buffer("window_", 0.54 - 0.46 * torch.cos(2 * math.pi * n_lin / k), persistent=False)
        n = (k - 1) / 2.0
        self.register_buffer("n_", 2 * math.pi * torch.arange(-n, 0).view(1, -1) / sample_rate, persistent=False)

    def filters(self) -> torch.Tensor:
        low = self.min_low_hz + torch.abs(self.low_hz_)
        high = torch.clamp(low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, self.sample_rate / 2)
        band = (high - low)[:, 0]
        left = ((torch.sin(torch.matmul(high, self.n_)) - torch.sin(torch.matmul(low, self.n_))) / (self.n_ / 2)) * self.window_
        center = 2 * band.view(-1, 1)
        band_pass = torch.cat([left, center, torch.flip(left, dims=[1])], dim=1) / (2 * band[:, None])
        return band_pass.view(self.out_channels, 1, self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        pad = (k // 2 - 1, k // 2) if self.stride > 1 else (k // 2, k // 2)
        return F.conv1d(F.pad(x, pad, mode=self.pad_mode), self.filters(), stride=self.stride)


class FeBlock(nn.Module):
    """conv (SincNet or Conv1d, padded so that the length is ceil(L / stride)) -> BatchNorm -> PReLU."""

    def __init__(self, num_inputs: int, fmaps: int, kwidth: int, stride: int, dilation: int, pad_mode: str,
                 sincnet: bool, sr: int):
        super().__init__()
        self.kwidth, self.stride, self.dilation, self.pad_mode, self.sincnet = kwidth, stride, dilation, pad_mode, sincnet
        if sincnet:
            self.conv = SincConv(fmaps, kwidth, stride=stride, pad_mode=pad_mode, sample_rate=sr)
        else:
            self.conv = nn.Conv1d(num_inputs, fmaps, kwidth, stride, dilation=dilation)
        self.norm = nn.BatchNorm1d(fmaps)
        self.act = nn.PReLU(fmaps, init=0)

    @property
    def pad(self) -> Tuple[int, int]:
        if self.sincnet:
            k = self.conv.kernel_size
            return (k // 2 - 1, k // 2) if self.stride > 1 else (k // 2, k // 2)
        if self.kwidth <= 1:
            return (0, 0)
        if self.stride > 1 or self.kwidth % 2 == 0:
            return (self.kwidth // 2 - 1, self.kwidth // 2)
        p = (self.kwidth // 2) * self.dilation
        return (p, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sincnet and self.kwidth > 1:
            x = F.pad(x, self.pad, mode=self.pad_mode)
        return self.act(self.norm(self.conv(x)))


class QRNNLayer(nn.Module):
    """Quasi-recurrent layer (Bradbury et al., 2017) with a 2-frame window and forget + output gates:
    ``[z, f, o] = W [x_t; x_{t-1}] + b``; ``c_t = sig(f) tanh(z) + (1 - sig(f)) c_{t-1}``; ``h_t = sig(o) c_t``."""

    def __init__(self, input_size: int, hidden_size: int, window: int = 2):
        super().__init__()
        if window not in (1, 2):
            raise ValueError(f"QRNN window must be 1 or 2, got {window}")
        self.window, self.hidden_size = window, hidden_size
        self.linear = nn.Linear(window * input_size, 3 * hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, B, C) -> h (T, B, hidden)."""
        if self.window == 2:
            x = torch.cat([x, torch.cat([torch.zeros_like(x[:1]), x[:-1]], 0)], 2)
        z, f, o = self.linear(x).chunk(3, dim=2)
        z, f = torch.tanh(z), torch.sigmoid(f)
        fz, keep = f * z, 1 - f
        c = torch.empty_like(fz)
        prev = fz[0]
        c[0] = prev
        for t in range(1, fz.shape[0]):  # same operation order as torchqrnn's CPU ForgetMult
            prev = fz[t] + keep[t] * prev
            c[t] = prev
        return torch.sigmoid(o) * c


class QRNN(nn.Module):
    """Stacked `QRNNLayer`s, with dropout between layers while training (torchqrnn's ``QRNN``)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, window: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.layers = nn.ModuleList(
            [QRNNLayer(input_size if i == 0 else hidden_size, hidden_size, window) for i in range(num_layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.dropout and i < len(self.layers) - 1:
                x = F.dropout(x, p=self.dropout, training=self.training)
        return x


class PasePlusEncoder(nn.Module):
    """``WaveFe`` of PASE: waveform (B, 1, N) or (B, N) at 16 kHz -> features (B, emb_dim, T) at 100 Hz.

    Attribute names (``denseskips``, ``blocks``, ``rnn.layers.0.linear``, ``W``, ``norm_out``) are the
    checkpoint's key names. Reflect padding needs ``min_samples`` samples (471 for PASE+, 29 ms).
    """

    def __init__(self, cfg: PasePlusConfig = PasePlusConfig.pase_plus()):
        super().__init__()
        self.cfg = cfg
        n = len(cfg.kwidths)
        if cfg.denseskips:  # registered first, as in WaveFe: the state dict lists them first
            self.denseskips = nn.ModuleList()
        self.blocks = nn.ModuleList()
        ninp = cfg.num_inputs
        for i, (k, s, d, fmap) in enumerate(zip(cfg.kwidths, cfg.strides, cfg.dilations, cfg.fmaps)):
            self.blocks.append(FeBlock(ninp, fmap, k, s, d, cfg.pad_mode, cfg.sincnet and i == 0, cfg.sr))
            if cfg.denseskips and i < n - 1:
                self.denseskips.append(nn.Conv1d(fmap, cfg.emb_dim, 1, bias=False))
            ninp = fmap
        if cfg.rnn_pool:
            rnn_dim = cfg.rnn_dim or cfg.emb_dim
            # WaveFe asks for a bidirectional rnn of rnn_dim // 2; the QRNN ignores the flag and doubles it
            self.rnn = QRNN(ninp, 2 * (rnn_dim // 2), cfg.rnn_layers, dropout=cfg.rnn_dropout)
            self.W = nn.Conv1d(rnn_dim, cfg.emb_dim, 1)
        else:
            self.W = nn.Conv1d(ninp, cfg.emb_dim, 1)
        if cfg.norm_out:
            self.norm_out = nn.BatchNorm1d(cfg.emb_dim, affine=False)

    @property
    def dim(self) -> int:
        return self.cfg.emb_dim

    def block_lengths(self, n_samples: int) -> List[int]:
        """Output length of every block: floor((L + pad - span) / stride) + 1, with span the dilated width."""
        out, length = [], int(n_samples)
        for block in self.blocks:
            if block.sincnet:
                span = block.conv.kernel_size
            else:
                span = block.dilation * (block.kwidth - 1) + 1
            padded = length + (sum(block.pad) if (block.sincnet or block.kwidth > 1) else 0)
            length = max((padded - span) // block.stride + 1, 0) if length > 0 else 0
            out.append(length)
        return out

    def num_frames(self, n_samples: int) -> int:
        return self.block_lengths(n_samples)[-1]

    def fits(self, n_samples: int) -> bool:
        """Whether every reflect pad is shorter than its input (what F.pad requires)."""
        if self.cfg.pad_mode != "reflect":
            return n_samples > 0
        length = int(n_samples)
        for block, out in zip(self.blocks, self.block_lengths(n_samples)):
            if length <= max(block.pad):
                return False
            length = out
        return length > 0

    @property
    def min_samples(self) -> int:
        n = 1
        while not self.fits(n):
            n += 1
        return n

    @staticmethod
    def _pool(skip: torch.Tensor, frames: int) -> torch.Tensor:
        """Average a skip down to ``frames`` (WaveFe.fuse_skip: whole windows of T_skip // frames)."""
        factor = skip.shape[2] // frames
        if factor > 1:
            skip = skip[:, :, : frames * factor]
            skip = skip.view(skip.shape[0], skip.shape[1], frames, factor).mean(dim=3)
        return skip

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1) if wav.ndim == 2 else wav
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"PASE+ takes waveforms (B, 1, N) or (B, N), got shape {tuple(wav.shape)}")
        if not self.fits(x.shape[-1]):
            raise ValueError(f"PASE+ needs at least {self.min_samples} samples, got {x.shape[-1]}")
        skips = []
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if self.cfg.denseskips and i < len(self.blocks) - 1:
                skips.append(self.denseskips[i](h))
        if self.cfg.rnn_pool:
            h = self.rnn(h.permute(2, 0, 1)).permute(1, 2, 0)
        y = self.W(h)
        for skip in skips:
            y = y + self._pool(skip, y.shape[2])
        if self.cfg.norm_out:
            y = self.norm_out(y)
        if self.cfg.tanh_out:
            y = torch.tanh(y)
        return y


def read_checkpoint(path) -> Dict[str, torch.Tensor]:
    """The state dict of a PASE checkpoint, read without executing code.

    PASE's trainer writes ``FE_e*.ckpt`` as ``torch.save(frontend.state_dict())``; its ``Saver``
    writes ``{"step", "state_dict", "optimizer"}``. Both are plain tensors and containers, which
    ``weights_only=True`` reads; a checkpoint that pickles other objects is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise PaseLoadError(f"{path}: PASE+ checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise PaseLoadError(
                f"{path}: holds pickled Python objects ({found.group(1)}) that would run code to load; refused "
                f"(torch.load weights_only=True); only a saved state dict of tensors is read"
            ) from None
        detail = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        raise PaseLoadError(f"{path}: not a readable torch checkpoint "
                            f"({detail.group(1) if detail else text.splitlines()[0]})") from None
    except Exception as err:  # truncated, not a torch file, ...
        raise PaseLoadError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PaseLoadError(f"{path}: expected a state dict of tensors (or {{'state_dict': ...}}), "
                            f"found {type(obj).__name__}")
    return dict(obj)


def load_pase_plus(ckpt, config) -> PasePlusEncoder:
    """Build the encoder from ``config`` (PASE+.cfg) and load ``ckpt`` (FE_e199.ckpt) strictly, in eval mode."""
    model = PasePlusEncoder(PasePlusConfig.from_file(config))
    state = read_checkpoint(ckpt)
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape (checkpoint vs config)", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:6])}" + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else ""))
        raise PaseLoadError(f"{ckpt}: does not match the network of {config}; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model.eval()
