"""`care-superb extract`: embeddings of an upstream for a set of audio files.

Each file goes through the upstream alone (batch of one), so padding never changes an embedding,
and its frames are trimmed to ``round(samples / downsample_rate)`` as s3prl's Featurizer trims
them. Audio follows the probe's rules by default (first 30 s, zero-padded to 1 s), so that
``--layers weighted:<run> --pool mean`` gives exactly the vector that run's probe pools.

Long jobs survive a kill: every output file is written atomically and files already written are
skipped when the command is run again with the same settings (``extract.json`` records them and a
different setting on the same ``--out`` is refused rather than mixed in). Unreadable files are
listed in ``skipped.csv`` with their reason and the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from care_core import atomic
from care_core.audio import AudioError

SETTINGS = "extract.json"
SKIPPED = "skipped.csv"
INDEX = "index.csv"
ARRAY = "embeddings.npy"
PARTS = ".parts"


@dataclass
class ExtractConfig:
    upstream: str
    audio: List[Path]
    out: Path
    layers: str = "all"  # all | K | weighted:<run folder or .ckpt>
    pool: str = "mean"  # mean | none
    format: str = "safetensors"  # safetensors | npy (one file per input)
    single: bool = False  # one array file + index.csv instead of one file per input
    max_seconds: Optional[float] = 30.0
    min_seconds: Optional[float] = 1.0
    device: str = "cpu"
    progress: bool = True


@dataclass
class LayerChoice:
    kind: str  # all | index | weighted
    index: Optional[int] = None
    run: Optional[str] = None
    settings: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "LayerChoice":
        if text == "all":
            return cls("all")
        if text.startswith("weighted:"):
            run = text[len("weighted:"):]
            if not run:
                raise ValueError("--layers weighted:<run> needs a run folder or .ckpt after 'weighted:'")
            return cls("weighted", run=run)
        try:
            return cls("index", index=int(text))
        except ValueError:
            raise ValueError(f"--layers must be all, a layer number or weighted:<run>, got {text!r}") from None


class UpstreamRunner:
    """One upstream (+ an s3prl Featurizer carrying a run's layer weights for ``weighted``)."""

    def __init__(self, spec_text: str, choice: LayerChoice, device: str = "cpu"):
        from care_superb.classifier import (ClassifierError, FeaturizerInfo, build_featurizer,
                                            build_hub_upstream)
        from sweep.cells import UpstreamSpec

        spec = UpstreamSpec.parse(_resolve_hub_id(spec_text), hash_ckpt=False)
        self.spec, self.choice, self.device = spec, choice, device
        self.upstream = build_hub_upstream(spec.hub, spec.ckpt, None, device, what=f"--upstream {spec_text}")
        self.featurizer = None
        if choice.kind == "weighted":
            from downstream_tasks.expert import load_checkpoint_safely

            run = Path(choice.run)
            ckpt_path = run if run.is_file() else run / "dev-best.ckpt"
            if not ckpt_path.is_file():
                raise ClassifierError(f"--layers weighted:{run}: no checkpoint {ckpt_path}")
            ckpt = load_checkpoint_safely(ckpt_path)
            args = ckpt["Args"]
            if args.upstream != spec.hub:
                raise ClassifierError(f"--layers weighted:{run}: that run trained on upstream {args.upstream!r}, "
                                      f"not {spec.hub!r}; its layer weights do not apply")
            info = FeaturizerInfo(feature_selection=args.upstream_feature_selection,
                                  layer_selection=args.upstream_layer_selection,
                                  normalize=bool(args.upstream_feature_normalize))
            self.featurizer = build_featurizer(self.upstream, info, device)
            if not ckpt.get("Featurizer") or "weights" not in ckpt["Featurizer"]:
                raise ClassifierError(f"{ckpt_path}: no Featurizer layer weights saved")
            self.featurizer.load_state_dict(ckpt["Featurizer"])
            choice.settings = {"run_checkpoint": str(ckpt_path.resolve()),
                               "layer_weights": torch.softmax(self.featurizer.weights.detach(), -1).tolist()}

    def rate(self, n_hidden_frames: int, n_samples: int) -> int:
        if hasattr(self.upstream, "get_downsample_rates"):
            return int(self.upstream.get_downsample_rates("hidden_states"))
        return max(1, round(n_samples / max(1, n_hidden_frames)))

    @torch.no_grad()
    def embed(self, wav: torch.Tensor) -> torch.Tensor:
        """(L, T, D) for all, (T, D) for one layer or the weighted sum; T trimmed as the Featurizer trims."""
        wavs = [wav.to(self.device)]
        features = self.upstream(wavs)
        if self.featurizer is not None:
            return self.featurizer(wavs, features)[0].cpu()
        hidden = features["hidden_states"]
        hidden = list(hidden.values()) if isinstance(hidden, dict) else list(hidden)
        n = min(hidden[0].shape[1], round(len(wav) / self.rate(hidden[0].shape[1], len(wav))))
        if self.choice.kind == "index":
            k = self.choice.index
            if not -len(hidden) <= k < len(hidden):
                raise ValueError(f"--layers {k}: upstream {self.spec.hub} has layers 0..{len(hidden) - 1}")
            return hidden[k][0, :n].cpu()
        return torch.stack([h[0, :n] for h in hidden]).cpu()


def _resolve_hub_id(text: str) -> str:
    """``care:org/name[@rev]`` → ``care:<cached snapshot>``; anything else unchanged."""
    from care_upstream.hub import is_repo_id, resolve

    prefix, sep, ckpt = text.partition(":")
    if sep and ckpt and not Path(ckpt).expanduser().exists() and is_repo_id(ckpt):
        return f"{prefix}:{resolve(ckpt)}"
    return text


def _settings(cfg: ExtractConfig, runner: UpstreamRunner) -> Dict[str, object]:
    return {"upstream": cfg.upstream, "hub": runner.spec.hub, "ckpt": runner.spec.ckpt, "layers": cfg.layers,
            "layer_settings": runner.choice.settings, "pool": cfg.pool,
            "format": "npy" if cfg.single else cfg.format, "single": cfg.single,
            "max_seconds": cfg.max_seconds, "min_seconds": cfg.min_seconds}


def _check_settings(out: Path, settings: Dict[str, object]) -> None:
    path = out / SETTINGS
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if before != settings:
            diff = [k for k in settings if not isinstance(before, dict) or before.get(k) != settings[k]]
            raise ValueError(f"{out} holds embeddings written with other settings ({', '.join(diff)} differ, see "
                             f"{path}); use another --out, or delete that folder to start over")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, settings)


def _save(path: Path, emb: torch.Tensor, fmt: str, meta: Dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file({"embedding": emb.contiguous()}, str(tmp), metadata=meta)
        else:
            with open(tmp, "wb") as f:
                np.save(f, emb.numpy())


def run_extract(cfg: ExtractConfig) -> Tuple[int, int, int]:
    """Write the embeddings; return (written now, already there, skipped)."""
    from tqdm import tqdm

    from care_superb.audio_inputs import collect_audio, output_names
    from downstream_tasks.audio import AudioConfig, load_audio

    if cfg.pool not in ("mean", "none"):
        raise ValueError(f"--pool must be mean or none, got {cfg.pool!r}")
    if cfg.single and cfg.pool != "mean":
        raise ValueError("--single-file stacks one vector per file, so it needs --pool mean")
    if cfg.format not in ("safetensors", "npy"):
        raise ValueError(f"--format must be safetensors or npy, got {cfg.format!r}")
    paths = collect_audio(cfg.audio)
    choice = LayerChoice.parse(cfg.layers)
    runner = UpstreamRunner(cfg.upstream, choice, cfg.device)
    _check_settings(cfg.out, _settings(cfg, runner))
    audio = AudioConfig(max_seconds=cfg.max_seconds, min_seconds=cfg.min_seconds)
    names = output_names(paths)
    suffix = ".npy" if cfg.single or cfg.format == "npy" else ".safetensors"
    root = cfg.out / PARTS if cfg.single else cfg.out
    targets = [root / f"{n}{suffix}" for n in names]
    written = already = 0
    skipped: List[Tuple[str, str]] = []
    with tqdm(total=len(paths), disable=not cfg.progress, desc="extract", unit="file", file=sys.stderr) as bar:
        for path, target in zip(paths, targets):
            if target.is_file():
                already += 1
            else:
                try:
                    wav = load_audio(path, audio)
                except (AudioError, OSError) as e:
                    skipped.append((str(path), getattr(e, "problem", None) or str(e).splitlines()[0]))
                    bar.update(1)
                    continue
                emb = runner.embed(wav)
                if cfg.pool == "mean":
                    emb = emb.mean(dim=-2)
                _save(target, emb.float(), "npy" if cfg.single else cfg.format,
                      {"source": str(path), "upstream": cfg.upstream, "layers": cfg.layers, "pool": cfg.pool})
                written += 1
            bar.update(1)
    _write_skipped(cfg.out / SKIPPED, skipped)
    if cfg.single:
        _stack(cfg.out, paths, targets)
    return written, already, len(skipped)


def _write_skipped(path: Path, skipped: List[Tuple[str, str]]) -> None:
    """The skipped list of this run; none left over from an earlier one when nothing was skipped."""
    from downstream_tasks.manifest import write_skipped

    if skipped:
        write_skipped(path, skipped)
    elif path.is_file():
        path.unlink()


def _stack(out: Path, paths: List[Path], parts: List[Path]) -> None:
    """embeddings.npy (N, ...) + index.csv (row, path) from the per-file parts that exist."""
    rows, arrays = [], []
    for path, part in zip(paths, parts):
        if part.is_file():
            rows.append((len(arrays), str(path)))
            arrays.append(np.load(part))
    if not arrays:
        return
    with atomic.atomic_path(out / ARRAY) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.stack(arrays))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "path"])
    w.writerows(rows)
    atomic.write_text(out / INDEX, buf.getvalue())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="care-superb extract",
        description="Write embeddings of an upstream for audio files: one safetensors/npy file per input (mirroring "
                    "the input folders), or one array + index.csv with --single-file. Resumable: run it again after "
                    "a kill and finished files are kept. Unreadable files are listed in skipped.csv.")
    p.add_argument("audio", nargs="+", type=Path, help="audio files, folders (recursive) or list files (.txt/.lst)")
    p.add_argument("--upstream", required=True,
                   help="as in the sweep: care:<folder or org/name>, care_acoustic:<folder>, wavlm_local:<pt>, "
                        "egemaps, any s3prl hub name")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--layers", default="all",
                   help="all (L x ... per file), K (one layer), or weighted:<run> (that run's learned layer weights)")
    p.add_argument("--pool", default="mean", choices=("mean", "none"), help="mean over frames, or keep frames")
    p.add_argument("--format", default="safetensors", choices=("safetensors", "npy"), help="per-file format")
    p.add_argument("--single-file", action="store_true", help=f"one {ARRAY} (N x ...) + {INDEX} (needs --pool mean)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="keep the first S seconds (default: 30, as the probe)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="zero-pad shorter files to S seconds (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    a = build_parser().parse_args(argv)
    cfg = ExtractConfig(upstream=a.upstream, audio=list(a.audio), out=a.out, layers=a.layers, pool=a.pool,
                        format=a.format, single=a.single_file, max_seconds=a.max_seconds, min_seconds=a.min_seconds,
                        device=a.device, progress=not a.no_progress)
    try:
        written, already, skipped = run_extract(cfg)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"care-superb extract: {e}", file=sys.stderr)
        raise SystemExit(2)
    print(f"{cfg.out}: wrote {written}, kept {already} already there"
          + (f", skipped {skipped} (see {cfg.out / SKIPPED})" if skipped else ""))


__all__ = ["ExtractConfig", "LayerChoice", "UpstreamRunner", "run_extract", "main"]
