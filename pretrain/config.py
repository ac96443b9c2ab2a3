"""The pre-training run's configuration: one dataclass, read from YAML, patched by ``key=value``.

Why a dataclass and not nanoGPT's ``exec(configurator.py)``: every key is typed and known, so a
typo in a YAML file or on the command line fails at start-up with the file and key named, instead
of silently creating a new global.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from care_core.constants import SAMPLE_RATE

# Keys whose change between a run and its ``--resume`` does not change the maths.
RESUMABLE_KEYS = (
    "max_steps", "eval_interval", "eval_max_batches", "eval_batch_size", "log_interval",
    "ckpt_interval", "tensorboard", "progress_bar", "num_workers", "device", "compile", "torch_threads",
    "target_cache", "out_dir",
)


# Keys that once existed: a file that still sets one is told why it went, not just "unknown".
REMOVED_KEYS = {
    "target_hop": "the frame hop is the model config's downsample_rate (320 samples for CARE)",
    "sample_rate": "audio is always read at the model's 16 kHz",
}


class ConfigError(ValueError):
    """A bad configuration file, key or value (names the source and the key)."""


@dataclass
class TrainConfig:
    # --- I/O -------------------------------------------------------------------------------
    out_dir: str = "runs/care_base"
    """Run folder: checkpoints (``ckpt_last.pt``, ``ckpt_best.pt``), ``losses.jsonl``, TensorBoard."""
    target_cache: str = "data/targets"
    """Folder written by ``care-pretrain targets`` (read with ``pretrain.targets.store.TargetStore``)."""

    # --- model -----------------------------------------------------------------------------
    init_from: str = "teachers"
    """``teachers``: WavLM-base + text teacher weights (docs/architecture.md); ``scratch``: random init of
    ``model_size`` (tests, the offline demo). ``--resume`` overrides both."""
    model_size: str = "base"
    """``base`` -> ``CareConfig.base()``; ``tiny`` -> ``CareConfig.tiny(text=tiny_text)``."""
    tiny_text: str = "minilm"
    wavlm: str = "microsoft/wavlm-base"
    text: str = "roberta-base"
    acoustic_grad_to_common: bool = False
    """Paper reading (acoustic loss also trains the common encoder) is one flag away; the
    authors' code blocks that gradient (docs/architecture.md), hence False."""
    freeze_frontend: bool = True
    dropout: float = -1.0
    """-1 keeps the model's dropout rates; a value in [0, 1) sets every dropout of the trained
    layers (0 makes a step a deterministic function of the batch, e.g. to compare DDP runs).
    The heads' output sizes always come from the target cache (PASE+ 256, eGeMAPS 25, ...)."""

    # --- data ------------------------------------------------------------------------------
    val_fraction: float = 0.2
    crop_seconds: float = 5.0
    """Crop length at 16 kHz. Crop offsets are whole model frames (the model config's
    ``downsample_rate``, 320 samples = 50 Hz), so audio and acoustic targets stay aligned; the crop
    itself must be a whole number of frames too (checked once the model is built)."""
    num_workers: int = 0

    # --- optimisation (docs/pretraining.md) --------------------------------------------------------
    batch_size: int = 128
    """Global batch in utterances: split over ranks, then over ``grad_accum`` micro-batches."""
    grad_accum: int = 1
    max_steps: int = 200_000
    lr: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    """Linear warm-up length; the authors use a constant lr (0)."""
    grad_clip: float = 0.0
    """Global-norm clip per optimiser; 0 = off (the authors do not clip)."""
    lambda_acoustic: float = 1.0

    # --- evaluation, logging, checkpoints --------------------------------------------------
    eval_interval: int = 5000
    eval_max_batches: int = 0
    """0 = the whole validation split at every evaluation."""
    eval_batch_size: int = 0
    """Per-rank validation batch; 0 = the training micro-batch size."""
    log_interval: int = 10
    ckpt_interval: int = 1000
    """Steps between ``ckpt_last.pt`` writes (what ``--resume`` continues from)."""
    tensorboard: bool = True
    progress_bar: bool = True

    # --- system ----------------------------------------------------------------------------
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``..."""
    dtype: str = "auto"
    """``auto``: bf16 on CUDA if supported, else fp16 (GradScaler); fp32 on CPU.
    ``bfloat16`` / ``float16`` / ``float32`` force it (``bfloat16`` on CPU = CPU autocast)."""
    compile: bool = False
    torch_threads: int = 0
    """CPU intra-op threads per process; 0 = torch's default. Tiny models on a busy CPU run faster
    on 1 thread (oversubscribed OpenMP threads spin)."""
    seed: int = 1337
    deterministic: bool = False
    """Ask torch for deterministic kernels (slower; exact resume on GPU needs it)."""

    def __post_init__(self) -> None:
        checks = [
            (self.init_from in ("teachers", "scratch"), "init_from must be 'teachers' or 'scratch'"),
            (self.model_size in ("base", "tiny"), "model_size must be 'base' or 'tiny'"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)"),
            (self.crop_seconds > 0, "crop_seconds must be > 0"),
            (self.batch_size > 0 and self.grad_accum > 0, "batch_size and grad_accum must be > 0"),
            (self.batch_size % self.grad_accum == 0, "batch_size must be divisible by grad_accum"),
            (self.max_steps > 0, "max_steps must be > 0"),
            (self.lr > 0, "lr must be > 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (self.lambda_acoustic >= 0, "lambda_acoustic must be >= 0"),
            (self.eval_interval > 0 and self.log_interval > 0 and self.ckpt_interval > 0,
             "eval_interval, log_interval and ckpt_interval must be > 0"),
            (self.dtype in ("auto", "bfloat16", "float16", "float32"),
             "dtype must be auto, bfloat16, float16 or float32"),
            (self.dropout == -1.0 or 0.0 <= self.dropout < 1.0, "dropout must be -1 (keep) or in [0, 1)"),
            (self.torch_threads >= 0, "torch_threads must be >= 0 (0 = torch default)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"TrainConfig: {msg}")
        crop = self.crop_seconds * SAMPLE_RATE
        if abs(crop - round(crop)) > 1e-6:
            raise ConfigError(f"TrainConfig: crop_seconds * {SAMPLE_RATE} Hz = {crop} is not a whole number of samples")

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_seconds * SAMPLE_RATE))

    def check_crop(self, hop: int) -> None:
        """The crop must be a whole number of model frames of ``hop`` samples, so that audio and
        target crops stay aligned."""
        if self.crop_samples % hop:
            raise ConfigError(
                f"TrainConfig: crop_seconds = {self.crop_seconds:g} gives {self.crop_samples} samples, not a whole "
                f"multiple of the model's frame hop of {hop} samples (CareConfig.downsample_rate)")

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in _fields()}


def _fields() -> List[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def _coerce(name: str, value: Any, typ: Any, source: str) -> Any:
    """Cast one value to the field's type; YAML already types most, the CLI gives strings."""
    typ = {"str": str, "int": int, "float": float, "bool": bool}.get(typ, typ) if isinstance(typ, str) else typ
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{source}: {name}={value!r} is not a boolean")
    try:
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str):
                value = value.replace("_", "")
                return int(float(value)) if "e" in value.lower() else int(value)
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name}={value!r} is not a valid {typ.__name__}") from None
    raise ConfigError(f"{source}: field {name} has an unsupported type {typ!r}")


def apply_updates(base: Dict[str, Any], updates: Dict[str, Any], source: str) -> Dict[str, Any]:
    known = {f.name: f.type for f in _fields()}
    out = dict(base)
    for key, value in updates.items():
        if key in REMOVED_KEYS:
            raise ConfigError(f"{source}: config key {key!r} was removed ({REMOVED_KEYS[key]}); delete it")
        if key not in known:
            raise ConfigError(f"{source}: unknown config key {key!r} (known: {', '.join(sorted(known))})")
        out[key] = _coerce(key, value, known[key], source)
    return out


def parse_overrides(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"command line: override {item!r} is not of the form key=value")
        out[key.lstrip("-").replace("-", "_")] = value
    return out


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- YAML file <- ``key=value`` overrides (later wins)."""
    values = TrainConfig().to_dict()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of config keys")
        values = apply_updates(values, data, str(p))
    values = apply_updates(values, parse_overrides(overrides), "command line")
    try:
        return TrainConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"{path or 'defaults'}: {e}") from None


def check_resume_compatible(current: TrainConfig, saved: Dict[str, Any], ckpt_path: str) -> None:
    """A resumed run must do the same maths; only bookkeeping keys may change."""
    for key, value in current.to_dict().items():
        if key in RESUMABLE_KEYS or key not in saved:
            continue
        if saved[key] != value:
            raise ConfigError(
                f"{ckpt_path}: cannot resume: config key {key!r} was {saved[key]!r} in the "
                f"checkpointed run and is {value!r} now (only {', '.join(RESUMABLE_KEYS)} may change)")
