"""The CARE model: WavLM front end, common / acoustic WavLM stacks, semantic encoder.

The layers keep the parameter names of Hugging Face's WavLM and text-encoder classes so teacher
weights load by name (``care_upstream.load``); attention runs through SDPA
(``care_upstream.attention``). What differs from ``WavLMModel`` is the orchestration: the 12
WavLM layers are split 6 + 6 with the relative position bias handed from the common to the
acoustic stack, a semantic branch of frozen text layers hangs off the common output, gradients
are routed as the paper describes, and padded batches give each utterance the result it gets
alone. Any utterance of at least one frame (400 samples) works in every variant: the semantic
branch pads itself to one adapter window.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from care_core import atomic
from care_core.constants import SAMPLE_RATE, VARIANTS

from .adapters import SemanticEncoder
from .attention import WavLMLayer
from .config import CareConfig
from .frontend import FrontEnd

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class CareOutput:
    """Per-layer outputs of one forward pass; every frame tensor is (B, T, hidden).

    ``pad_mask`` is True on padding frames. ``semantic`` entries are zero beyond what the
    utterance's own transposed-conv output covers. Lists are empty for a path the requested
    variant does not use. The head predictions exist only with ``with_heads=True``;
    ``semantic_pred`` is the mean of the last semantic output over the utterance's T frames
    (what the utterance alone would give), projected to ``semantic_target_dim``.
    """

    frame_lengths: torch.Tensor
    pad_mask: torch.Tensor
    conv: torch.Tensor
    common: List[torch.Tensor] = field(default_factory=list)
    acoustic: List[torch.Tensor] = field(default_factory=list)
    semantic: List[torch.Tensor] = field(default_factory=list)
    acoustic_pred: Optional[torch.Tensor] = None
    semantic_pred: Optional[torch.Tensor] = None


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def _masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the first ``lengths[b]`` frames of x (B, T, D)."""
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    return (x * valid[..., None]).sum(dim=1) / lengths.to(x.dtype).clamp(min=1)[:, None]


class CARE(nn.Module):
    """CARE upstream. ``CARE(cfg)`` gives random weights (tests, pre-training start)."""

    def __init__(self, config: CareConfig) -> None:
        super().__init__()
        self.config = config
        wcfg = config.wavlm_config()
        self.frontend = FrontEnd(wcfg)
        # The first common layer owns the relative position embedding; every later layer,
        # including the whole acoustic stack, reuses its (ungated) bias (as in WavLMEncoder).
        self.common = nn.ModuleList(
            [WavLMLayer(wcfg, has_relative_position_bias=(i == 0)) for i in range(config.n_common)]
        )
        self.acoustic = nn.ModuleList(
            [WavLMLayer(wcfg, has_relative_position_bias=False) for _ in range(config.n_acoustic)]
        )
        self.acoustic_head = nn.Linear(config.hidden_size, config.acoustic_target_dim)
        self.semantic = SemanticEncoder(
            hidden=config.hidden_size,
            text_config=config.text_config(),
            n_layers=config.n_semantic,
            kernel=config.adapter_kernel,
            stride=config.adapter_stride,
            output_padding=config.adapter_output_padding,
            target_dim=config.semantic_target_dim,
            text_layer_start=config.text_layer_start,
        )
        self.semantic.layers.requires_grad_(False)
        if config.freeze_frontend:
            self.frontend.requires_grad_(False)
        self.train(self.training)

    # ---- modes --------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "CARE":
        """Like nn.Module.train, but the frozen text layers stay in eval (no dropout)."""
        super().train(mode)
        self.semantic.layers.eval()
        return self

    # ---- checks -------------------------------------------------------------------------
    def min_samples(self, variant: str = "care") -> int:
        return self.config.min_samples(variant)

    def _check_batch(self, wavs: torch.Tensor, lengths: Optional[torch.Tensor], variant: str) -> torch.Tensor:
        if not isinstance(wavs, torch.Tensor) or wavs.dim() != 2:
            shape = tuple(wavs.shape) if isinstance(wavs, torch.Tensor) else type(wavs).__name__
            raise ValueError(f"wavs must be a (batch, samples) tensor, got {shape}")
        if wavs.shape[0] == 0 or wavs.shape[1] == 0:
            raise ValueError(f"wavs is empty: shape {tuple(wavs.shape)}")
        if not wavs.is_floating_point():
            raise ValueError(f"wavs must be floating point, got {wavs.dtype}")
        if not torch.isfinite(wavs).all():
            bad = (~torch.isfinite(wavs)).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"wavs contain NaN or inf (batch rows {bad})")
        if lengths is None:
            lengths = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
        else:
            lengths = torch.as_tensor(lengths, device=wavs.device)
            if lengths.dim() != 1 or lengths.shape[0] != wavs.shape[0]:
                raise ValueError(f"lengths must have shape ({wavs.shape[0]},), got {tuple(lengths.shape)}")
            if lengths.is_floating_point() or lengths.dtype == torch.bool:
                raise ValueError(f"lengths must be integer sample counts, got {lengths.dtype}")
            lengths = lengths.long()
            if (lengths > wavs.shape[1]).any():
                raise ValueError(
                    f"lengths {lengths.tolist()} exceed the padded length {wavs.shape[1]}"
                )
        need = self.min_samples(variant)
        if (lengths < need).any():
            short = [(i, int(n)) for i, n in enumerate(lengths.tolist()) if n < need]
            raise ValueError(
                f"utterances too short: (row, samples) {short}; need at least {need} samples "
                f"({need / SAMPLE_RATE:.3f} s at {SAMPLE_RATE} Hz) for one frame"
            )
        return lengths

    # ---- forward ------------------------------------------------------------------------
    def forward(self, wavs: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                with_heads: bool = False, variant: str = "care") -> CareOutput:
        """wavs (B, N) 16 kHz, zero-padded; lengths (B,) valid samples (None: all N).

        ``variant`` only skips paths it does not need ("care_acoustic" skips the semantic
        branch, "care_semantic" the acoustic one); ``with_heads`` needs "care".
        """
        _check_variant(variant)
        if with_heads and variant != "care":
            raise ValueError("with_heads=True needs variant='care' (both heads)")
        lengths = self._check_batch(wavs, lengths, variant)
        max_len = int(lengths.max())
        wavs = wavs[:, :max_len]
        padded = bool((lengths != max_len).any())
        cfg = self.config

        if cfg.normalize_waveform:
            wavs = self._normalize(wavs, lengths if padded else None)

        frontend_ctx = torch.no_grad() if cfg.freeze_frontend else contextlib.nullcontext()
        with frontend_ctx:
            conv, frame_lengths = self.frontend(wavs, lengths if padded else None)
        b, t, _ = conv.shape
        if frame_lengths is None:
            frame_lengths = torch.full((b,), t, dtype=torch.long, device=conv.device)
        pad_mask = torch.arange(t, device=conv.device)[None, :] >= frame_lengths[:, None]
        key_pad = pad_mask if padded else None  # None: no key masking (fast path)

        # Every layer always runs: no LayerDrop (config.layerdrop is ignored), as in the authors'
        # loop over the layers, so the 13 hidden states always exist.
        x, bias = conv, None
        common = []
        for layer in self.common:
            x, bias = layer(x, key_pad, bias)
            common.append(x)

        acoustic = []
        if variant in ("care", "care_acoustic"):
            a, a_bias = x, bias
            if not cfg.acoustic_grad_to_common:
                # The acoustic loss must not reach the common encoder (nor its position embedding).
                a, a_bias = a.detach(), a_bias.detach()
            for layer in self.acoustic:
                a, a_bias = layer(a, key_pad, a_bias)
                acoustic.append(a)

        semantic = []
        if variant in ("care", "care_semantic"):
            semantic = self.semantic(x, frame_lengths if padded else None)

        out = CareOutput(frame_lengths=frame_lengths, pad_mask=pad_mask, conv=conv,
                         common=common, acoustic=acoustic, semantic=semantic)
        if with_heads:
            out.acoustic_pred = self.acoustic_head(acoustic[-1])
            out.semantic_pred = self.semantic.head_proj(_masked_mean(semantic[-1], frame_lengths))
        return out

    @staticmethod
    def _normalize(wavs: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Per-utterance zero mean / unit variance over valid samples (s3prl's layer_norm(wav))."""
        eps = 1e-5
        if lengths is None:
            return nn.functional.layer_norm(wavs, wavs.shape[-1:], eps=eps)
        valid = (torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]).to(wavs.dtype)
        n = lengths.to(wavs.dtype)[:, None]
        mean = (wavs * valid).sum(1, keepdim=True) / n
        var = (((wavs - mean) * valid) ** 2).sum(1, keepdim=True) / n
        return (wavs - mean) / torch.sqrt(var + eps) * valid

    def hidden_states(self, out: CareOutput, variant: str = "care") -> List[torch.Tensor]:
        """The 13 upstream layers, in the order docs/architecture.md gives (padding frames zeroed).

        "care": (B, T, 2*hidden) each: [x|x], [c_i|c_i], [acoustic_i|semantic_i];
        "care_acoustic": conv, common, acoustic; "care_semantic": conv, common, semantic.
        """
        _check_variant(variant)
        if variant in ("care", "care_acoustic") and not out.acoustic:
            raise ValueError(f"variant {variant!r} needs the acoustic path; run forward with that variant")
        if variant in ("care", "care_semantic") and not out.semantic:
            raise ValueError(f"variant {variant!r} needs the semantic path; run forward with that variant")
        if variant == "care":
            states = [torch.cat([h, h], dim=-1) for h in [out.conv, *out.common]]
            states += [torch.cat([a, s], dim=-1) for a, s in zip(out.acoustic, out.semantic)]
        elif variant == "care_acoustic":
            states = [out.conv, *out.common, *out.acoustic]
        else:
            states = [out.conv, *out.common, *out.semantic]
        if out.pad_mask.any():
            keep = (~out.pad_mask)[..., None].to(states[0].dtype)
            states = [h * keep for h in states]
        return states

    def extract(self, wavs: Sequence[torch.Tensor], sample_rate: int = SAMPLE_RATE,
                variant: str = "care") -> Tuple[List[torch.Tensor], torch.Tensor]:
        """List of 1-D waveforms -> (13 hidden states, frame_lengths). The s3prl entry point."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"CARE expects {SAMPLE_RATE} Hz audio, got sample_rate={sample_rate}; resample first")
        if not isinstance(wavs, (list, tuple)) or len(wavs) == 0:
            raise ValueError("wavs must be a non-empty list of 1-D waveform tensors")
        for i, w in enumerate(wavs):
            if not isinstance(w, torch.Tensor) or w.dim() != 1:
                shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
                raise ValueError(f"wav {i} must be a 1-D tensor (mono samples), got {shape}")
            if w.numel() == 0:
                raise ValueError(f"wav {i} is empty")
        device = wavs[0].device
        lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long, device=device)
        batch = nn.utils.rnn.pad_sequence([w.float() for w in wavs], batch_first=True)
        out = self(batch, lengths, variant=variant)
        return self.hidden_states(out, variant), out.frame_lengths

    # ---- bookkeeping --------------------------------------------------------------------
    def num_parameters(self, variant: str = "care") -> int:
        """Parameters used at inference by ``variant`` (heads excluded)."""
        _check_variant(variant)
        mods: List[nn.Module] = [self.frontend, self.common]
        if variant in ("care", "care_acoustic"):
            mods.append(self.acoustic)
        if variant in ("care", "care_semantic"):
            mods += [self.semantic.down, self.semantic.layers, self.semantic.up]
        return sum(p.numel() for m in mods for p in m.parameters())

    # ---- persistence --------------------------------------------------------------------
    @classmethod
    def from_teachers(cls, config: Optional[CareConfig] = None, wavlm=None, text=None, **overrides) -> "CARE":
        """Paper initialisation: front end + WavLM layers and text layers from the teachers
        (HF id / folder / UniLM .pt), adapters and heads random. See ``care_upstream.load``."""
        from . import load

        teachers = {k: v for k, v in (("wavlm", wavlm), ("text", text)) if v is not None}
        return load.build_from_teachers(config=config, **teachers, **overrides)

    def save_pretrained(self, folder: Union[str, os.PathLike]) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``folder`` (each file atomically)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic.atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        atomic.write_text(folder / CONFIG_NAME, self.config.to_json())
        return folder

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu") -> "CARE":
        """Load a folder (config.json + model.safetensors), such a .safetensors file, or a
        ``{"config": dict, "model": state_dict}`` torch file (read with weights_only=True:
        no code from the file runs). Bad files raise ValueError naming the file. A Hugging Face Hub
        id (``org/name[@revision]``) that is not a local path is fetched through the Hub cache
        (`care_upstream.hub.resolve`: data files only, HF_HUB_OFFLINE=1 honoured)."""
        path = Path(path).expanduser()
        if not path.exists():
            from .hub import is_repo_id, resolve

            if not is_repo_id(str(path)):
                raise FileNotFoundError(f"CARE checkpoint not found: {path}")
            path = resolve(str(path))
        if path.is_dir():
            config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        elif path.suffix == ".safetensors":
            config_path, weights_path = path.parent / CONFIG_NAME, path
        elif path.suffix in _TORCH_SUFFIXES:
            return cls._from_torch_file(path, map_location)
        else:
            raise ValueError(f"{path}: expected a folder, a .safetensors file or a {'/'.join(_TORCH_SUFFIXES)} file")
        for p in (config_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"CARE checkpoint {path} lacks {p.name} (looked for {p})")
        config = read_config(config_path)
        state = read_safetensors(weights_path, map_location)
        return build_care(config, state, source=str(weights_path)).eval()

    @classmethod
    def _from_torch_file(cls, path: Path, map_location) -> "CARE":
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # pickle with classes/code is refused by weights_only
            raise ValueError(
                f"{path}: cannot read as a plain tensor checkpoint with weights_only=True ({_first_line(e)}); "
                f"a pickled module (the authors' format) goes through `care-superb convert-authors`"
            ) from None
        if not isinstance(blob, dict) or not isinstance(blob.get("config"), dict) or not isinstance(blob.get("model"), dict):
            raise ValueError(f"{path}: expected a dict with 'config' (dict) and 'model' (state_dict)")
        return build_care(blob["config"], blob["model"], source=str(path)).eval()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_config(path: Union[str, os.PathLike]) -> CareConfig:
    """``config.json`` -> CareConfig; anything else (not UTF-8, not JSON, not an object, unknown
    or invalid fields) raises one ValueError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a CARE config.json (not valid UTF-8 JSON: {_first_line(e)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CARE config.json (a JSON {type(data).__name__}, expected an object)")
    try:
        return CareConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a CARE config.json ({_first_line(e)})") from None


def read_safetensors(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu") -> dict:
    """Tensors of a safetensors file; an empty, truncated or corrupt file raises one ValueError
    naming it (safetensors' own SafetensorError says neither which file nor what to do)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    device = map_location if isinstance(map_location, str) else str(map_location)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        size = path.stat().st_size if path.exists() else 0
        raise ValueError(
            f"{path}: not a readable safetensors file ({size} bytes; {_first_line(e)}); "
            f"re-export or re-download the weights"
        ) from None


def build_care(config: Union[CareConfig, Mapping], state: Optional[Mapping[str, torch.Tensor]] = None,
               *, source: Optional[str] = None) -> CARE:
    """The one way to build a CARE from a config (and optionally its weights).

    ``config``: a CareConfig or its dict (``config.json`` / a trainer checkpoint's
    ``model_config``). ``state``: a full CARE state dict; every weight must be present, none
    extra, shapes equal, else ValueError naming ``source`` and the missing / unexpected keys.
    Checked before a single tensor is copied, so no half-loaded model escapes. Weight-norm key
    names of either torch convention are accepted (a checkpoint written under another torch).
    The model comes back in train mode, as ``nn.Module`` does; loaders call ``.eval()``.
    """
    where = source or "state dict"
    if isinstance(config, Mapping):
        try:
            config = CareConfig.from_dict(dict(config))
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{where}: model config is not a CARE config ({_first_line(e)})") from None
    elif not isinstance(config, CareConfig):
        raise TypeError(f"build_care needs a CareConfig or its dict, got {type(config).__name__}")
    model = CARE(config)
    if state is None:
        return model
    from .load import _abbreviate, _match_weight_norm

    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: weights must be a mapping of names to tensors, got {type(state).__name__}")
    not_tensor = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensor:
        raise ValueError(f"{where}: weights hold non-tensor values under {_abbreviate(not_tensor, 5)}")
    own = model.state_dict()
    state = _match_weight_norm(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({_abbreviate(missing, 5)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_abbreviate(unexpected, 5)})" if unexpected else ""]
        raise ValueError(f"{where}: weights do not match the config: {'; '.join(p for p in parts if p)}")
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"{where}: weights do not match the config: {len(wrong)} tensors have other shapes, "
                         f"e.g. {_abbreviate(wrong, 3)}")
    model.load_state_dict(state, strict=True)
    return model
