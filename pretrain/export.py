"""``care-pretrain export RUN_DIR --out FOLDER``: a trainer checkpoint -> a CARE upstream folder.

The trainer's checkpoint carries optimiser moments, RNG states and the run config; the upstream
needs only ``config.json`` + ``model.safetensors`` (what ``CARE.from_pretrained`` and the s3prl
expert read). The checkpoint is read with ``torch.load(weights_only=True)`` so exporting a
checkpoint from elsewhere runs no code from it, and the written folder is loaded back and run on
a probe waveform to prove it gives the trained model's outputs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from pretrain.train import CKPT_BEST, CKPT_LAST, CheckpointError, load_checkpoint

PROBE_SECONDS = 1.0
"""Length of the noise probe used to compare the exported model with the checkpoint."""
PROBE_SEED = 0


def resolve_checkpoint(run: Path, which: str) -> Path:
    """A run folder (-> its best or last checkpoint) or a checkpoint file."""
    if run.is_file():
        return run
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run folder or checkpoint file")
    path = run / (CKPT_BEST if which == "best" else CKPT_LAST)
    if not path.is_file():
        other = run / (CKPT_LAST if which == "best" else CKPT_BEST)
        hint = f"; {other.name} exists (use --checkpoint {'last' if which == 'best' else 'best'})" if other.is_file() else ""
        raise CheckpointError(f"{path}: not found (no validation has run yet?){hint}")
    return path


def model_from_checkpoint(path: Path, ckpt: Optional[dict] = None):
    """The eval-mode CARE of a trainer checkpoint and the checkpoint (``ckpt``: already loaded from ``path``)."""
    from care_upstream.model import build_care

    if ckpt is None:
        ckpt = load_checkpoint(path)
    try:
        model = build_care(ckpt["model_config"], ckpt["model"], source=str(path))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(str(e) if isinstance(e, ValueError) else f"{path}: not a CARE checkpoint ({e})") from None
    return model.eval(), ckpt


@torch.no_grad()
def max_output_difference(a, b) -> float:
    """Largest |difference| over all 13 hidden states and both heads on a fixed noise probe."""
    n = int(PROBE_SECONDS * 16000)
    g = torch.Generator().manual_seed(PROBE_SEED)
    wavs = 0.1 * torch.randn(2, n, generator=g)
    lengths = torch.tensor([n, n * 3 // 4])
    oa, ob = a(wavs, lengths, with_heads=True), b(wavs, lengths, with_heads=True)
    pairs = list(zip(a.hidden_states(oa), b.hidden_states(ob)))
    pairs += [(oa.acoustic_pred, ob.acoustic_pred), (oa.semantic_pred, ob.semantic_pred)]
    return max(float((x - y).abs().max()) for x, y in pairs)


def export(run: Path, out: Path, which: str = "best") -> dict:
    """Write ``out/config.json`` + ``out/model.safetensors`` and verify the round trip."""
    from care_upstream.model import CARE

    path = resolve_checkpoint(Path(run), which)
    model, ckpt = model_from_checkpoint(path)
    model.save_pretrained(out)
    reloaded = CARE.from_pretrained(out)
    diff = max_output_difference(model, reloaded)
    if diff != 0.0:
        raise CheckpointError(f"{out}: the exported model's outputs differ from {path} by {diff:g}")
    info = {"checkpoint": str(path), "out": str(out), "step": int(ckpt["step"]),
            "best_val_loss": float(ckpt.get("best_val_loss", float("nan"))),
            "parameters_inference": model.num_parameters("care"), "max_output_difference": diff}
    return info


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="care-pretrain export", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run folder of pretrain.train (or a ckpt_*.pt file)")
    ap.add_argument("--out", required=True, help="folder to write config.json + model.safetensors into")
    ap.add_argument("--checkpoint", choices=("best", "last"), default="best",
                    help="which checkpoint of the run folder: best total validation loss (default) or last step")
    args = ap.parse_args(argv)
    try:
        info = export(Path(args.run), Path(args.out), args.checkpoint)
    except ValueError as e:
        print(f"care-pretrain export: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
