"""Convert the CARE authors' pre-trained checkpoint into a CARE folder.

The authors' trainer (iiscleap/CARE ``pretraining/train_pase.py``) saves the whole pickled
``EmotionClassifier`` with ``torch.save(model)``. Unpickling such a file executes code from it,
so this converter only does that with explicit consent (``trust_pickle=True`` /
``--trust-pickle``). Without it, it reads plain state dicts (``weights_only=True``): the same
keys saved with ``torch.save(model.state_dict())``, with or without the ``joint_model.`` prefix,
or wrapped in a dict under ``state_dict`` / ``model`` / ``model_state_dict``.

Their ``SpeechTextModel`` attribute names -> CARE:

=============================  =========================  ======================================
authors (``joint_model.``)     CARE                       what
=============================  =========================  ======================================
audio_feature_extractor.{i}    frontend.conv_layers.{i}   WavLM conv layers (HF modules)
feature_projection_audio       frontend.feature_projection
pos_conv                       frontend.pos_conv_embed
wavlm_layer_norm               frontend.layer_norm
audio_model.{i}                common.{i}                 WavLM layers 1-6
dual_model.{i}                 acoustic.{i}               WavLM layers 7-12
linear                         acoustic_head              768 -> 256 (PASE+)
common_model.{j}               semantic.layers.{j}        RoBERTa layers 7-12 (despite the name)
downblock.{j} / upblock.{j}    semantic.down/up.{j}       adapters
roberta_embeddings, text_model (dropped)                  RoBERTa embeddings + layers 1-6, unused
=============================  =========================  ======================================

The authors pool the last adapter output straight into the 768-dim RoBERTa target, i.e. no
semantic head projection: the converted config has ``semantic_target_dim == hidden`` (Identity).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import types
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from .load import (
    CheckpointError,
    LoadReport,
    PickledObjectsError,
    _abbreviate,
    _first_line,
    load_into_care,
    read_torch_file,
)

logger = logging.getLogger(__name__)

AUTHORS_PREFIX = "joint_model."
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
"""Dict keys under which training scripts nest a state dict (the authors' ``.tar`` uses the second)."""

# (authors' prefix, CARE prefix). Order matters only for readability; prefixes are disjoint.
AUTHORS_TO_CARE = (
    ("audio_feature_extractor.", "frontend.conv_layers."),
    ("feature_projection_audio.", "frontend.feature_projection."),
    ("pos_conv.", "frontend.pos_conv_embed."),
    ("wavlm_layer_norm.", "frontend.layer_norm."),
    ("audio_model.", "common."),
    ("dual_model.", "acoustic."),
    ("linear.", "acoustic_head."),
    ("common_model.", "semantic.layers."),
    ("downblock.", "semantic.down."),
    ("upblock.", "semantic.up."),
)
AUTHORS_DROPPED = ("roberta_embeddings.", "text_model.", "attenpool.", "decoder.")
"""Text-side modules used only on transcripts during the authors' experiments, and their
attention-pooling head; none is part of CARE at inference."""

CLASSIFIER_DROPPED = ("fc_text.", "fc_text_final.")
"""``EmotionClassifier``'s own (unused) classification layers, outside ``joint_model``."""

TRUST_PICKLE_HINT = (
    "Unpickling executes code from the file, so only do it for a file you trust: pass "
    "trust_pickle=True (CLI: --trust-pickle). Or, where the authors' code is importable, re-save "
    "it as a plain state dict with torch.save(model.state_dict(), path) and convert that."
)


# --------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------
REAL_PICKLE_MODULES = ("torch", "collections", "copyreg", "copy_reg", "_codecs", "numpy", "builtins", "__builtin__")
"""Globals a trusted pickle may resolve for real: what tensors, parameters and containers need
(``__builtin__`` / ``copy_reg``: their Python 2 names in protocol-2 pickles, which torch writes).
Every other class (the authors' own, transformers', tokenizers') becomes a weights-only stand-in,
so neither missing authors' code nor transformers version drift can break the conversion."""


def _stub_class(module: str, name: str) -> type:
    """Stand-in for a class named by the pickle.

    As an ``nn.Module`` subclass the stand-in takes a pickled module's ``__dict__`` (parameters,
    buffers, submodules), so ``state_dict()`` of the whole tree works; other objects (a pickled
    tokenizer, configs) are kept as opaque state.
    """

    def __init__(self, *args, **kwargs):  # called only if the pickle instantiates it directly
        nn.Module.__init__(self)

    def __setstate__(self, state):
        if isinstance(state, dict):
            nn.Module.__setstate__(self, state)
        else:
            nn.Module.__init__(self)
            object.__setattr__(self, "_stub_state", state)

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"stand-in for {module}.{name}: holds weights only, cannot run")

    return type(
        name,
        (nn.Module,),
        {"__module__": f"care_stub.{module}", "__init__": __init__, "__setstate__": __setstate__, "forward": forward},
    )


def _tolerant_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` that resolves only :data:`REAL_PICKLE_MODULES`
    and substitutes weights-only stand-ins for every other class."""
    stubs: dict[tuple[str, str], type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.split(".")[0] in REAL_PICKLE_MODULES:
                return super().find_class(module, name)
            if (module, name) not in stubs:
                logger.info("pickle names %s.%s: using a weights-only stand-in", module, name)
                stubs[module, name] = _stub_class(module, name)
            return stubs[module, name]

    mod = types.ModuleType("care_tolerant_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.loads = pickle.loads
    mod.dump, mod.dumps = pickle.dump, pickle.dumps
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def _load_trusted_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_tolerant_pickle_module())
    except Exception as e:  # anything the pickle itself raises; the file is the problem
        raise CheckpointError(f"{path}: could not unpickle the file even with trust_pickle: {_first_line(e)}") from e


def read_authors_checkpoint(src: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The authors' weights as a flat state dict, ``joint_model.`` prefix kept where present.

    Accepts a pickled ``EmotionClassifier`` / ``SpeechTextModel`` (only with ``trust_pickle``),
    a state dict, or a dict wrapping one under ``state_dict`` / ``model_state_dict`` / ``model``.
    """
    path = Path(src)
    try:
        obj = read_torch_file(path)
    except PickledObjectsError as e:
        if not trust_pickle:
            raise PickledObjectsError(
                f"{path}: is a pickled Python object (e.g. the authors' torch.save(model)), not a plain "
                f"state dict; refusing to unpickle it. {TRUST_PICKLE_HINT}"
            ) from e
        obj = _load_trusted_pickle(path)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else f"dict with keys {_abbreviate(sorted(map(str, obj)))}"
        raise CheckpointError(f"{path}: no state dict of tensors found (got {kind})")
    return {str(k): v for k, v in obj.items()}


# --------------------------------------------------------------------------------------------
# Key map
# --------------------------------------------------------------------------------------------
def authors_state_to_care(state: Mapping[str, torch.Tensor], source: str = "checkpoint"):
    """``(care_state, dropped_keys)`` from the authors' keys; raises listing keys with no place."""
    def unwrap(key: str) -> str:
        return key[len("module."):] if key.startswith("module.") else key  # (Distributed)DataParallel

    has_joint = any(unwrap(k).startswith(AUTHORS_PREFIX) for k in state)
    care, dropped, unexpected = {}, [], []
    for key, value in state.items():
        k = unwrap(key)
        if has_joint:
            if not k.startswith(AUTHORS_PREFIX):
                (dropped if k.startswith(CLASSIFIER_DROPPED) else unexpected).append(key)
                continue
            k = k[len(AUTHORS_PREFIX):]
        if k.startswith(AUTHORS_DROPPED) or k.startswith(CLASSIFIER_DROPPED):
            dropped.append(key)
            continue
        for src, dst in AUTHORS_TO_CARE:
            if k.startswith(src):
                care[dst + k[len(src):]] = value
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"{source}: keys that are not the authors' CARE model: {_abbreviate(unexpected)}")
    if not care:
        raise CheckpointError(f"{source}: none of the authors' CARE keys found (is this their checkpoint?)")
    return care, dropped


def _count(care_state: Mapping[str, Any], prefix: str) -> int:
    pat = re.compile("^" + re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in care_state if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def _as_dict(config) -> Optional[dict]:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{p}: not a readable JSON config: {e}") from e
    return dict(config)


def convert_authors_checkpoint(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    trust_pickle: bool = False,
    text_config=None,
    wavlm_config=None,
) -> LoadReport:
    """Authors' checkpoint -> ``CARE.save_pretrained(out_dir)``; returns the load report.

    ``wavlm_config`` / ``text_config`` (HF config, dict, or JSON path) default to the full-size
    ``CareConfig.base()`` teachers (WavLM-base, RoBERTa-base). Layer counts and head sizes are
    read from the checkpoint; every CARE weight must be covered by it, else nothing is written.
    """
    from .config import CareConfig
    from .model import build_care

    path = Path(src)
    state = read_authors_checkpoint(path, trust_pickle=trust_pickle)
    care_state, dropped = authors_state_to_care(state, source=str(path))

    overrides: dict[str, Any] = {}
    for name, prefix in (("n_common", "common."), ("n_acoustic", "acoustic."), ("n_semantic", "semantic.layers.")):
        n = _count(care_state, prefix)
        if n == 0:
            raise CheckpointError(f"{path}: no {prefix}* weights (authors' module for it missing)")
        overrides[name] = n
    head = care_state.get("acoustic_head.weight")
    if head is None:
        raise CheckpointError(f"{path}: lacks the acoustic head `linear.weight`")
    overrides["acoustic_target_dim"] = int(head.shape[0])
    down = care_state.get("semantic.down.0.weight")
    if down is None:
        raise CheckpointError(
            f"{path}: has no adapters (`downblock.*`); the authors' model was trained with use_conv=False, "
            "which is not CARE"
        )
    overrides["adapter_kernel"] = int(down.shape[-1])
    base = CareConfig.base()
    wavlm = _as_dict(wavlm_config) or base.wavlm
    text = _as_dict(text_config) or base.text
    overrides["semantic_target_dim"] = int(wavlm["hidden_size"])  # authors: no head projection
    try:
        cfg = CareConfig(wavlm=wavlm, text=text, **overrides)
    except ValueError as e:
        raise CheckpointError(f"{path}: checkpoint does not fit the given configs: {e}") from e
    model = build_care(cfg)
    report = load_into_care(model, care_state, covers=("",), source=str(path))
    report.dropped = dropped
    model.eval()
    model.save_pretrained(out_dir)
    logger.info(report.summary())
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``care-superb convert-authors SRC --out DIR [--trust-pickle]``; exits with status 2 on a bad checkpoint."""
    parser = argparse.ArgumentParser(
        prog="care-superb convert-authors",
        description="Convert the CARE authors' pre-trained checkpoint into a CARE model folder "
        "(config.json + model.safetensors).",
    )
    parser.add_argument("src", help="the authors' checkpoint (pickled model or state dict)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling a whole pickled model; this executes code from the file, so only for "
        "files you trust",
    )
    parser.add_argument("--wavlm-config", help="HF WavLM config.json (default: WavLM-base)")
    parser.add_argument("--text-config", help="HF text-encoder config.json (default: RoBERTa-base)")
    args = parser.parse_args(argv)
    try:
        report = convert_authors_checkpoint(
            args.src, args.out, trust_pickle=args.trust_pickle,
            text_config=args.text_config, wavlm_config=args.wavlm_config,
        )
    except CheckpointError as e:
        # SystemExit rather than a return code: `care-superb` ignores main()'s return value.
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(report.summary())
    print(f"wrote {Path(args.out) / 'config.json'} and {Path(args.out) / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
