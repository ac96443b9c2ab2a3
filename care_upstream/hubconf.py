"""s3prl hub entries for CARE (``-u care``, ``-u care_acoustic``, ``-u care_semantic``) and the
handcrafted openSMILE baselines (``-u egemaps``, ``-u compare``; ``_raw`` for unscaled LLDs).

Thin like s3prl's own hubconf files: every public callable here becomes an s3prl upstream name.
"""

import os as _os

from .config import CareConfig as _CareConfig
from .expert import UpstreamExpert as _UpstreamExpert
from .handcrafted import HandcraftedExpert as _HandcraftedExpert
from .model import CARE as _CARE

__all__ = [
    "care", "care_acoustic", "care_semantic", "care_random_base", "care_random_tiny",
    "egemaps", "compare", "egemaps_raw", "compare_raw",
]

_ENV_VAR = "CARE_CKPT"
_DEFAULT_DIR = _os.path.join("~", ".cache", "care_superb", "care_base")
_HOW_TO = (
    "No CARE weights found. Pass them with `-k PATH` (folder with config.json + model.safetensors), "
    f"or set ${_ENV_VAR}, or put them in {_DEFAULT_DIR}. To get weights: convert the authors' "
    "checkpoint with `care-superb convert-authors`, or pre-train with `care-pretrain` and export "
    "the upstream folder with `care-pretrain export`."
)


def _resolve_ckpt(ckpt):
    if ckpt:
        path = _os.path.expanduser(str(ckpt))
        if not _os.path.exists(path):
            from .hub import is_repo_id

            if is_repo_id(str(ckpt)):  # `-k org/name[@rev]`: CARE.from_pretrained fetches it through the Hub cache
                return str(ckpt)
            raise FileNotFoundError(f"CARE checkpoint {ckpt!r} does not exist. {_HOW_TO}")
        return path
    env = _os.environ.get(_ENV_VAR)
    if env:
        path = _os.path.expanduser(env)
        if not _os.path.exists(path):
            raise FileNotFoundError(f"${_ENV_VAR}={env!r} does not exist. {_HOW_TO}")
        return path
    default = _os.path.expanduser(_DEFAULT_DIR)
    if _os.path.exists(default):
        return default
    raise FileNotFoundError(_HOW_TO)


def care(ckpt=None, *args, **kwargs):
    """CARE, 13 layers of [acoustic | semantic] (1536-dim for care_base).
    ckpt (str): weights folder / .safetensors / {"config","model"} .pt / Hub id org/name[@rev]; default $CARE_CKPT,
    then ~/.cache/care_superb/care_base/."""
    kwargs["variant"] = "care"
    return _UpstreamExpert(_resolve_ckpt(ckpt), *args, **kwargs)


def care_acoustic(ckpt=None, *args, **kwargs):
    """CARE acoustic + common path only (paper Table IV), 13 x 768. ckpt as for `care`."""
    kwargs["variant"] = "care_acoustic"
    return _UpstreamExpert(_resolve_ckpt(ckpt), *args, **kwargs)


def care_semantic(ckpt=None, *args, **kwargs):
    """CARE semantic + common path only (paper Table IV), 13 x 768. ckpt as for `care`."""
    kwargs["variant"] = "care_semantic"
    return _UpstreamExpert(_resolve_ckpt(ckpt), *args, **kwargs)


def _random(config, seed, kwargs):
    import torch

    kwargs.pop("ckpt", None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _CARE(config)
    return _UpstreamExpert(model, **kwargs)


def care_random_base(*args, seed=0, **kwargs):
    """RANDOM weights, full care_base size: for speed and plumbing checks only, not features."""
    return _random(_CareConfig.base(), seed, kwargs)


def care_random_tiny(*args, seed=0, **kwargs):
    """RANDOM weights, tiny widths (13 x 64 states): for fast pipeline tests only."""
    return _random(_CareConfig.tiny(), seed, kwargs)


def egemaps(*args, **kwargs):
    """openSMILE eGeMAPSv02 LLDs, 25-d at 100 Hz, standardised with fixed constants measured on real
    speech (care_upstream/handcrafted_scale.py). No weights, so no `-k`."""
    return _HandcraftedExpert("egemaps", scale=True, **kwargs)


def compare(*args, **kwargs):
    """openSMILE ComParE_2016 LLDs, 65-d at 100 Hz, standardised like `egemaps`."""
    return _HandcraftedExpert("compare", scale=True, **kwargs)


def egemaps_raw(*args, **kwargs):
    """`egemaps` without the fixed scaling: openSMILE's raw LLD values."""
    return _HandcraftedExpert("egemaps", scale=False, **kwargs)


def compare_raw(*args, **kwargs):
    """`compare` without the fixed scaling: openSMILE's raw LLD values."""
    return _HandcraftedExpert("compare", scale=False, **kwargs)
