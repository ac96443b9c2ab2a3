"""Real teacher weights into CARE: key maps, checkpoint readers and the teacher builder.

CARE starts from two pre-trained teachers, as in the paper: WavLM (front end, layers 1-6 -> common
encoder, layers 7-12 -> acoustic encoder) and a text encoder (its last ``n_semantic`` layers ->
frozen semantic encoder). The adapters and the two heads start random, as in the paper.

WavLM comes in two on-disk formats:

* Hugging Face (hub name or ``save_pretrained`` folder): ``WavLMModel`` key names.
* UniLM / s3prl ``.pt``: ``{"cfg": {...}, "model": state_dict}`` with fairseq key names; the map
  to HF names follows transformers' ``convert_wavlm_original_pytorch_checkpoint_to_pytorch.py``.

Everything here is strict on purpose: a teacher weight that does not land would leave a random
layer inside a model that claims to be pre-trained, and nothing downstream would notice. So every
source key is either mapped, or dropped by an explicit rule (task heads, mask embedding), or
reported as unexpected; and every CARE weight a teacher should cover must be covered.

``.pt`` files are read with ``torch.load(weights_only=True)``: a checkpoint cannot run code here.
"""

from __future__ import annotations

import ast
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_WAVLM = "microsoft/wavlm-base"
DEFAULT_TEXT = "roberta-base"

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
"""File names that are torch checkpoints, never hub names (a missing one is a missing file)."""


class CheckpointError(ValueError):
    """A checkpoint (file, folder or hub name) that cannot become CARE weights; names the source."""


# --------------------------------------------------------------------------------------------
# Load reports
# --------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What a load did, per CARE key.

    ``missing``: CARE weights the source should have provided and did not (an error).
    ``unexpected``: source weights with no place in CARE (an error).
    ``dropped``: source weights deliberately unused (mask embedding, task heads, unused text layers).
    ``random_init``: CARE weights no source covers by design (adapters, heads).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    random_init: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        lines = [
            f"load report for {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped, {len(self.random_init)} randomly initialised"
        ]
        for name in ("missing", "unexpected", "random_init", "dropped"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name}: {_abbreviate(keys)}")
        return "\n".join(lines)

    def check(self) -> "LoadReport":
        """Raise if a weight did not land or a source weight found no place; else return self."""
        if not self.ok:
            raise CheckpointError(self.summary())
        return self

    def merge(self, other: "LoadReport") -> "LoadReport":
        return LoadReport(
            source=f"{self.source} + {other.source}",
            loaded=self.loaded + other.loaded,
            missing=self.missing + other.missing,
            unexpected=self.unexpected + other.unexpected,
            dropped=self.dropped + other.dropped,
            random_init=sorted(set(self.random_init) & set(other.random_init)),
        )


def _abbreviate(keys: Sequence[str], limit: int = 12) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# --------------------------------------------------------------------------------------------
# Reading .pt files
# --------------------------------------------------------------------------------------------
class PickledObjectsError(CheckpointError):
    """The file holds pickled Python objects, which ``weights_only=True`` refuses to rebuild."""


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file.

    Only tensors, containers and primitive values can come out: a file that needs classes
    unpickled (e.g. a whole ``torch.save(model)``) raises :class:`PickledObjectsError`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _weights_only_detail(e)
        if "Unsupported global" in detail:
            raise PickledObjectsError(
                f"{path}: holds pickled Python objects, not just tensors; refusing to unpickle them "
                f"(unpickling executes code from the file). Details: {detail}"
            ) from e
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (wrong format or truncated file): {detail}"
        ) from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (wrong format or truncated file): {_first_line(e)}"
        ) from e


def _weights_only_detail(e: BaseException) -> str:
    """The one informative line of torch's weights-only refusal (which global / opcode)."""
    for line in str(e).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --------------------------------------------------------------------------------------------
# Weight-norm key names (pos_conv): torch's legacy hook vs. parametrizations
# --------------------------------------------------------------------------------------------
_WN_LEGACY = ("weight_g", "weight_v")
_WN_PARAM = ("parametrizations.weight.original0", "parametrizations.weight.original1")


def hf_uses_parametrized_weight_norm() -> bool:
    """The rule HF applies when building ``WavLMPositionalConvEmbedding`` (same torch check)."""
    return hasattr(nn.utils.parametrizations, "weight_norm")


def rename_weight_norm(state: Mapping[str, torch.Tensor], parametrized: bool) -> dict[str, torch.Tensor]:
    """Rename weight-norm keys to one convention.

    A checkpoint written under one torch version (``weight_g``/``weight_v``) must load into
    modules built under another (``parametrizations.weight.original0/1``), and back.
    """
    src, dst = (_WN_LEGACY, _WN_PARAM) if parametrized else (_WN_PARAM, _WN_LEGACY)
    out = {}
    for key, value in state.items():
        for s, d in zip(src, dst):
            if key.endswith("." + s) or key == s:
                key = key[: len(key) - len(s)] + d
                break
        out[key] = value
    return out


def _match_weight_norm(state: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    target_keys = set(target_keys)
    if any(k.endswith(_WN_PARAM[0]) for k in target_keys):
        return rename_weight_norm(state, parametrized=True)
    if any(k.endswith(_WN_LEGACY[0]) for k in target_keys):
        return rename_weight_norm(state, parametrized=False)
    return dict(state)


# --------------------------------------------------------------------------------------------
# HF WavLMModel -> CARE
# --------------------------------------------------------------------------------------------
WAVLM_DROPPED = ("masked_spec_embed",)
"""HF ``WavLMModel`` weights CARE has no use for (the pre-training mask embedding)."""

_HF_WAVLM_PREFIX = "wavlm."
"""HF ``WavLMFor*`` heads wrap the model under this prefix; what lies outside it is a task head."""

_WAVLM_FIXED_MAP = (
    (re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(.+)$"), r"frontend.conv_layers.\1.\2"),
    (re.compile(r"^feature_projection\.(.+)$"), r"frontend.feature_projection.\1"),
    (re.compile(r"^encoder\.pos_conv_embed\.(.+)$"), r"frontend.pos_conv_embed.\1"),
    (re.compile(r"^encoder\.layer_norm\.(.+)$"), r"frontend.layer_norm.\1"),
)
_WAVLM_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


def wavlm_layer_count(hf_state: Mapping[str, Any]) -> int:
    """Number of transformer layers in an HF WavLM state dict (checks they are 0..L-1)."""
    idx = {int(m.group(1)) for k in hf_state if (m := _WAVLM_LAYER.match(_strip_wavlm_prefix(k)))}
    if not idx:
        return 0
    if idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"WavLM state dict has gaps in its layer indices: {sorted(idx)}")
    return max(idx) + 1


def _strip_wavlm_prefix(key: str) -> str:
    return key[len(_HF_WAVLM_PREFIX):] if key.startswith(_HF_WAVLM_PREFIX) else key


def wavlm_key_to_care(key: str, n_common: int = 6, n_acoustic: Optional[int] = None) -> Optional[str]:
    """CARE name of one HF ``WavLMModel`` key; None when the key has no place in CARE."""
    for pattern, repl in _WAVLM_FIXED_MAP:
        if pattern.match(key):
            return pattern.sub(repl, key)
    m = _WAVLM_LAYER.match(key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        if i < n_common:
            return f"common.{i}.{rest}"
        if n_acoustic is None or i < n_common + n_acoustic:
            return f"acoustic.{i - n_common}.{rest}"
    return None


def wavlm_state_to_care(
    hf_wavlm_state_dict: Mapping[str, torch.Tensor],
    n_common: int = 6,
    n_acoustic: Optional[int] = None,
    return_dropped: bool = False,
):
    """Map an HF ``WavLMModel`` (or ``WavLMFor*``) state dict onto CARE key names.

    Layers ``0..n_common-1`` become ``common.*``, the next ``n_acoustic`` (default: all the rest)
    ``acoustic.*``. Weight-norm key names are kept as given; :func:`load_into_care` renames them
    to the target's convention. Raises :class:`CheckpointError` listing any key that has no place
    in CARE, and when the checkpoint has fewer layers than CARE needs.
    With ``return_dropped`` returns ``(care_state, dropped_keys)``.
    """
    has_prefix = any(k.startswith(_HF_WAVLM_PREFIX) for k in hf_wavlm_state_dict)
    n_layers = wavlm_layer_count(hf_wavlm_state_dict)
    needed = n_common + (n_acoustic if n_acoustic is not None else 1)
    if n_layers < needed:
        raise CheckpointError(
            f"WavLM checkpoint has {n_layers} transformer layers; CARE needs {n_common} common + "
            f"{n_acoustic if n_acoustic is not None else 'at least 1'} acoustic"
        )
    care, dropped, unexpected = {}, [], []
    for key, value in hf_wavlm_state_dict.items():
        if has_prefix and not key.startswith(_HF_WAVLM_PREFIX):
            dropped.append(key)  # task head of a WavLMFor* model
            continue
        k = _strip_wavlm_prefix(key)
        if k in WAVLM_DROPPED:
            dropped.append(key)
            continue
        new = wavlm_key_to_care(k, n_common, n_acoustic)
        if new is None:
            m = _WAVLM_LAYER.match(k)
            if m and n_acoustic is not None and int(m.group(1)) >= n_common + n_acoustic:
                dropped.append(key)  # layers beyond the configured depth
            else:
                unexpected.append(key)
            continue
        care[new] = value
    if unexpected:
        raise CheckpointError(f"WavLM state dict has keys with no place in CARE: {_abbreviate(unexpected)}")
    return (care, dropped) if return_dropped else care


# --------------------------------------------------------------------------------------------
# UniLM / s3prl WavLM .pt -> HF
# --------------------------------------------------------------------------------------------
UNILM_WAVLM_DEFAULTS: dict[str, Any] = {
    # Defaults of UniLM's / s3prl's ``WavLMConfig`` (s3prl/upstream/wavlm/WavLM.py), for keys a
    # checkpoint's cfg may omit.
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "normalize": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
}

UNILM_LAYER_NORM_EPS = 1e-5
"""fairseq ``LayerNorm`` / ``Fp32GroupNorm`` eps used throughout UniLM WavLM."""

_UNILM_LAYER_MAP = (
    ("self_attn.q_proj.", "attention.q_proj."),
    ("self_attn.k_proj.", "attention.k_proj."),
    ("self_attn.v_proj.", "attention.v_proj."),
    ("self_attn.out_proj.", "attention.out_proj."),
    ("self_attn.grep_linear.", "attention.gru_rel_pos_linear."),
    ("self_attn.relative_attention_bias.", "attention.rel_attn_embed."),
    ("self_attn_layer_norm.", "layer_norm."),
    ("fc1.", "feed_forward.intermediate_dense."),
    ("fc2.", "feed_forward.output_dense."),
    ("final_layer_norm.", "final_layer_norm."),
)
_UNILM_LAYER_EXACT = {"self_attn.grep_a": "attention.gru_rel_pos_const"}

UNILM_DROPPED_PREFIXES = ("mask_emb", "label_embs_concat", "final_proj.", "project_q.", "quantizer.", "target_glu.")
"""Pre-training-only weights of UniLM / fairseq checkpoints (HF's converter drops them too)."""


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's ``conv_feature_layers`` string without ``eval``.

    Only list/tuple literals of ints combined with ``+`` and ``*`` are accepted.
    """

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = ev(ast.parse(spec, mode="eval"))
    except (SyntaxError, ValueError, TypeError) as e:
        raise CheckpointError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride): {e}") from e
    if not isinstance(layers, list) or not layers or not all(
        isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in layers
    ):
        raise CheckpointError(f"conv_feature_layers {spec!r} is not a list of (dim, kernel, stride) triples")
    return layers


def unilm_config_to_hf(unilm_cfg: Mapping[str, Any]):
    """HF ``WavLMConfig`` equivalent to a UniLM / s3prl WavLM ``cfg`` dict."""
    from transformers import WavLMConfig

    cfg = {**UNILM_WAVLM_DEFAULTS, **dict(unilm_cfg)}
    if not cfg["relative_position_embedding"] or not cfg["gru_rel_pos"]:
        raise CheckpointError(
            "UniLM cfg has relative_position_embedding="
            f"{cfg['relative_position_embedding']}, gru_rel_pos={cfg['gru_rel_pos']}: HF WavLM (and CARE) "
            "always use gated relative position bias, so this checkpoint cannot be represented exactly"
        )
    if cfg["extractor_mode"] not in ("default", "layer_norm"):
        raise CheckpointError(f"UniLM cfg extractor_mode {cfg['extractor_mode']!r} is not 'default' or 'layer_norm'")
    layers = parse_conv_feature_layers(cfg["conv_feature_layers"])
    config = WavLMConfig(
        conv_dim=[d for d, _, _ in layers],
        conv_kernel=[k for _, k, _ in layers],
        conv_stride=[s for _, _, s in layers],
        conv_bias=bool(cfg["conv_bias"]),
        feat_extract_norm="group" if cfg["extractor_mode"] == "default" else "layer",
        feat_extract_activation="gelu",
        hidden_size=cfg["encoder_embed_dim"],
        num_hidden_layers=cfg["encoder_layers"],
        intermediate_size=cfg["encoder_ffn_embed_dim"],
        num_attention_heads=cfg["encoder_attention_heads"],
        hidden_act=cfg["activation_fn"],
        do_stable_layer_norm=bool(cfg["layer_norm_first"]),
        num_conv_pos_embeddings=cfg["conv_pos"],
        num_conv_pos_embedding_groups=cfg["conv_pos_groups"],
        num_buckets=cfg["num_buckets"],
        max_bucket_distance=cfg["max_distance"],
        hidden_dropout=cfg["dropout"],
        attention_dropout=cfg["attention_dropout"],
        activation_dropout=cfg["activation_dropout"],
        feat_proj_dropout=cfg["dropout_input"],
        layerdrop=cfg["encoder_layerdrop"],
        layer_norm_eps=UNILM_LAYER_NORM_EPS,
        architectures=["WavLMModel"],
    )
    # UniLM layer-normalises the waveform itself when cfg.normalize (WavLM-large); HF leaves that
    # to the feature extractor. Kept so a CARE config built from this can carry it on.
    config.normalize_waveform = bool(cfg["normalize"])
    return config


def unilm_state_to_hf(unilm_cfg: Mapping[str, Any], unilm_state: Mapping[str, torch.Tensor]):
    """``(WavLMConfig, HF WavLMModel state dict)`` from a UniLM / s3prl WavLM checkpoint.

    Pos-conv weight-norm keys come out in the convention of the installed torch/HF, so the
    result loads into ``WavLMModel(config)`` with ``strict=True``. Raises
    :class:`CheckpointError` listing keys that have no HF counterpart.
    """
    config = unilm_config_to_hf(unilm_cfg)
    group_norm = config.feat_extract_norm == "group"
    conv_re = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(.+)$")
    layer_re = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in unilm_state.items():
        new = None
        if key.startswith(UNILM_DROPPED_PREFIXES):
            continue
        if m := conv_re.match(key):
            i, rest = int(m.group(1)), m.group(2)
            if rest in ("0.weight", "0.bias"):
                new = f"feature_extractor.conv_layers.{i}.conv.{rest[2:]}"
            elif group_norm and i == 0 and rest in ("2.weight", "2.bias"):
                new = f"feature_extractor.conv_layers.0.layer_norm.{rest[2:]}"
            elif not group_norm and rest in ("2.1.weight", "2.1.bias"):
                new = f"feature_extractor.conv_layers.{i}.layer_norm.{rest[4:]}"
        elif key.startswith("layer_norm."):
            new = "feature_projection." + key
        elif key.startswith("post_extract_proj."):
            new = "feature_projection.projection." + key[len("post_extract_proj."):]
        elif key.startswith("encoder.pos_conv.0."):
            new = "encoder.pos_conv_embed.conv." + key[len("encoder.pos_conv.0."):]
        elif key.startswith("encoder.layer_norm."):
            new = key
        elif m := layer_re.match(key):
            i, rest = int(m.group(1)), m.group(2)
            if rest in _UNILM_LAYER_EXACT:
                new = f"encoder.layers.{i}.{_UNILM_LAYER_EXACT[rest]}"
            else:
                for src, dst in _UNILM_LAYER_MAP:
                    if rest.startswith(src):
                        new = f"encoder.layers.{i}.{dst}{rest[len(src):]}"
                        break
        if new is None:
            unexpected.append(key)
        else:
            out[new] = value
    if unexpected:
        raise CheckpointError(f"UniLM WavLM state dict has keys with no HF counterpart: {_abbreviate(unexpected)}")
    if "feature_projection.projection.weight" not in out:
        # UniLM skips post_extract_proj when conv dim == model dim; HF always has the Linear.
        if config.conv_dim[-1] != config.hidden_size:
            raise CheckpointError("UniLM WavLM state dict lacks post_extract_proj although conv dim != model dim")
        out["feature_projection.projection.weight"] = torch.eye(config.hidden_size)
        out["feature_projection.projection.bias"] = torch.zeros(config.hidden_size)
    return config, rename_weight_norm(out, parametrized=hf_uses_parametrized_weight_norm())


# --------------------------------------------------------------------------------------------
# Teacher loaders
# --------------------------------------------------------------------------------------------
def _is_local(source: str | os.PathLike) -> bool:
    s = str(source)
    return Path(s).exists() or s.endswith(CHECKPOINT_SUFFIXES + (".safetensors",)) or s.startswith((".", "/", "~"))


def _from_pretrained(cls, source: str, what: str, required: Sequence[str] = ("",), ignore: Sequence[str] = ()):
    """``cls.from_pretrained`` that refuses partially loaded weights and names the source.

    Only weights under the ``required`` prefixes count (a text teacher's pooler or embeddings
    are not used by CARE, and e.g. roberta-base ships without a pooler).
    """
    try:
        model, info = cls.from_pretrained(source, output_loading_info=True)
    except (OSError, ValueError, EnvironmentError) as e:
        where = "folder" if Path(source).is_dir() else "hub model (needs the network)"
        raise CheckpointError(f"{source}: cannot load {what} from this {where}: {_first_line(e)}") from e
    missing = [
        k for k in info.get("missing_keys", []) if k.startswith(tuple(required)) and k not in ignore
    ]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise CheckpointError(
            f"{source}: {what} weights did not all load (missing {_abbreviate(missing)}; "
            f"shape mismatch {_abbreviate([str(m) for m in mismatched])})"
        )
    model.eval()
    return model


def load_wavlm(source: str | os.PathLike = DEFAULT_WAVLM):
    """``(WavLMConfig, HF WavLMModel state dict)`` from a hub name, a HF folder or a UniLM ``.pt``.

    Hub names need the network; a folder is anything ``WavLMModel.save_pretrained`` wrote.
    """
    from transformers import WavLMModel

    s = str(source)
    path = Path(s).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: folder has no config.json; not a Hugging Face WavLM model folder")
        model = _from_pretrained(WavLMModel, str(path), "WavLM", ignore=WAVLM_DROPPED)
        return model.config, model.state_dict()
    if path.is_file() or _is_local(s):
        if not path.exists():
            raise CheckpointError(f"{path}: no such file")
        ckpt = read_torch_file(path)
        if not isinstance(ckpt, dict) or "cfg" not in ckpt or "model" not in ckpt:
            found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise CheckpointError(
                f"{path}: not a UniLM/s3prl WavLM checkpoint (expected a dict with 'cfg' and 'model'; found {found})"
            )
        cfg = ckpt["cfg"]
        if isinstance(cfg, dict) and "encoder_embed_dim" not in cfg and isinstance(cfg.get("model"), dict):
            cfg = cfg["model"]  # fairseq-style nested cfg
        if not isinstance(cfg, dict) or not isinstance(ckpt["model"], dict):
            raise CheckpointError(f"{path}: 'cfg' and 'model' must be dicts")
        try:
            return unilm_state_to_hf(cfg, ckpt["model"])
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from e
    model = _from_pretrained(WavLMModel, s, "WavLM", ignore=WAVLM_DROPPED)
    return model.config, model.state_dict()


def load_text_encoder(source: str | os.PathLike = DEFAULT_TEXT, min_layers: int = 1):
    """``(text config dict, [state dict of encoder.layer[i] for every i])`` of any HF encoder.

    BERT-like encoders (RoBERTa, BERT, MiniLM, ...) keep their transformer blocks in
    ``encoder.layer``; that is what CARE's semantic encoder reuses.
    """
    from transformers import AutoModel

    s = str(Path(source).expanduser()) if _is_local(source) else str(source)
    if _is_local(source):
        if not Path(s).exists():
            raise CheckpointError(f"{s}: no such Hugging Face model folder")
        if not Path(s).is_dir() or not (Path(s) / "config.json").is_file():
            raise CheckpointError(f"{s}: not a Hugging Face model folder (expected a folder with config.json)")
    model = _from_pretrained(AutoModel, s, "text encoder", required=("encoder.layer.",))
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise CheckpointError(
            f"{s}: {type(model).__name__} has no `encoder.layer` list of transformer blocks; "
            "CARE's semantic encoder needs a BERT-like HF encoder (RoBERTa, BERT, MiniLM, ...)"
        )
    if len(layers) < min_layers:
        raise CheckpointError(f"{s}: text encoder has {len(layers)} layers; CARE needs at least {min_layers}")
    return model.config.to_dict(), [layer.state_dict() for layer in layers]


def text_layers_to_care(layer_states: Sequence[Mapping[str, torch.Tensor]], start: int, n_semantic: int):
    """``semantic.layers.{j}.*`` from text layers ``start .. start + n_semantic - 1``."""
    if start < 0 or start + n_semantic > len(layer_states):
        raise CheckpointError(
            f"text encoder has {len(layer_states)} layers; CARE needs layers {start}..{start + n_semantic - 1}"
        )
    return {
        f"semantic.layers.{j}.{k}": v
        for j in range(n_semantic)
        for k, v in layer_states[start + j].items()
    }


# --------------------------------------------------------------------------------------------
# Loading into a CARE model
# --------------------------------------------------------------------------------------------
WAVLM_PREFIXES = ("frontend.", "common.", "acoustic.")
TEXT_PREFIXES = ("semantic.layers.",)


def load_into_care(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    covers: Sequence[str],
    source: str,
    strict: bool = True,
) -> LoadReport:
    """Copy ``state`` (CARE key names) into ``model``.

    ``covers``: key prefixes the source is responsible for; every model weight under them must be
    in ``state`` (else ``missing``). Keys of ``state`` the model lacks are ``unexpected``; a
    shape mismatch is an error. With ``strict`` (default) any of these raises before a single
    tensor is copied, so a failed load never leaves a half-loaded model.
    """
    target = model.state_dict()
    state = _match_weight_norm(state, target)
    report = LoadReport(source=source)
    report.unexpected = sorted(k for k in state if k not in target)
    report.missing = sorted(k for k in target if k.startswith(tuple(covers)) and k not in state)
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if bad_shapes:
        raise CheckpointError(f"{source}: shape mismatch: {_abbreviate(bad_shapes)}")
    if strict:
        report.check()
    loadable = {k: v for k, v in state.items() if k in target}
    with torch.no_grad():
        for k, v in loadable.items():
            target[k].copy_(v.to(dtype=target[k].dtype))
    report.loaded = sorted(loadable)
    report.random_init = sorted(k for k in target if not k.startswith(tuple(covers)))
    return report


def care_config_from_teachers(wavlm_config, text_config: Mapping[str, Any], config=None, **overrides):
    """A ``CareConfig`` whose WavLM and text parts are the teachers' own configs.

    The teachers fix the architecture; ``config``/``overrides`` set the rest (layer split,
    adapters, heads, flags). The semantic target defaults to the text teacher's width.
    """
    import dataclasses

    from .config import CareConfig

    wavlm_dict = wavlm_config.to_dict() if hasattr(wavlm_config, "to_dict") else dict(wavlm_config)
    text_dict = dict(text_config)
    normalize = wavlm_dict.pop("normalize_waveform", None)
    base = config.to_dict() if config is not None else {}
    base.update(overrides)
    base["wavlm"], base["text"] = wavlm_dict, text_dict
    if config is None:
        base.setdefault("semantic_target_dim", text_dict["hidden_size"])
        if normalize is not None:
            base.setdefault("normalize_waveform", bool(normalize))
        # text_layer_start=None must be re-derived from this text teacher's depth.
    elif "text_layer_start" not in overrides and config.text.get("num_hidden_layers") != text_dict.get("num_hidden_layers"):
        base["text_layer_start"] = None
    known = {f.name for f in dataclasses.fields(CareConfig)}
    unknown = sorted(set(base) - known)
    if unknown:
        raise ValueError(f"unknown CareConfig fields: {unknown}")
    return CareConfig(**base)


def build_from_teachers(
    wavlm: str | os.PathLike = DEFAULT_WAVLM,
    text: str | os.PathLike = DEFAULT_TEXT,
    config=None,
    return_report: bool = False,
    **cfg_overrides,
):
    """CARE initialised as in the paper: WavLM front end + layers, text layers; adapters/heads random.

    Raises :class:`CheckpointError` if any front-end / WavLM-layer / text-layer weight did not
    land. Logs the load report; with ``return_report`` returns ``(model, report)``.
    """
    from .model import build_care

    wavlm_config, wavlm_state = load_wavlm(wavlm)
    text_config, text_layers = load_text_encoder(text)
    cfg = care_config_from_teachers(wavlm_config, text_config, config, **cfg_overrides)
    model = build_care(cfg)
    care_wavlm, dropped = wavlm_state_to_care(wavlm_state, cfg.n_common, cfg.n_acoustic, return_dropped=True)
    r_audio = load_into_care(model, care_wavlm, WAVLM_PREFIXES, source=str(wavlm))
    r_audio.dropped += dropped
    care_text = text_layers_to_care(text_layers, cfg.text_layer_start, cfg.n_semantic)
    r_text = load_into_care(model, care_text, TEXT_PREFIXES, source=str(text))
    unused = [i for i in range(len(text_layers)) if not cfg.text_layer_start <= i < cfg.text_layer_start + cfg.n_semantic]
    r_text.dropped += [f"encoder.layer.{i}.*" for i in unused]
    report = r_audio.merge(r_text).check()
    logger.info(report.summary())
    model.load_report = report
    return (model, report) if return_report else model
