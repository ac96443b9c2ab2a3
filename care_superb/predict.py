"""`care-superb predict`: run a trained probe on new audio and write predictions.csv.

The model is a run folder (``result/downstream/<exp>``, its dev-best.ckpt), an exported classifier
folder, or a Hub id of one (`EmotionClassifier.from_pretrained`). With ``--manifest`` and
``--split`` the rows are loaded and batched exactly as the runner's ``-m evaluate`` does (the
task's dataset, its crop/pad rules, the run's eval batch size, manifest order), which is why the
two agree to the last digit: for upstreams whose output depends on padding, batch composition
matters. Files that cannot be decoded are skipped, listed in ``<out>_skipped.csv``, and the run goes
on. ``--window S --hop S`` cuts long recordings into windows (a 20-minute interview would
otherwise be cropped to the run's first 30 s) and adds one mean row per file.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from care_core import atomic
from care_core.audio import AudioError
from downstream_tasks.manifest import write_skipped

Row = Dict[str, str]


@dataclass
class PredictConfig:
    model: str
    audio: List[Path]
    out: Path = Path("predictions.csv")
    manifest: Optional[Path] = None
    split: str = "test"
    fold: Optional[str] = None
    checkpoint: str = "dev-best.ckpt"
    batch_size: Optional[int] = None
    window: Optional[float] = None
    hop: Optional[float] = None
    device: str = "cpu"
    upstream_ckpt: Optional[str] = None
    revision: Optional[str] = None
    progress: bool = True


def window_spans(n_samples: int, sample_rate: int, window: float, hop: float) -> List[Tuple[int, int]]:
    """Sample spans [start, end) of `window`-second windows every `hop` seconds.

    The last window is aligned to the end of the file so that no audio is left out; a file shorter
    than one window is one window.
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"--window and --hop must be positive seconds, got {window} and {hop}")
    size, step = int(round(window * sample_rate)), max(1, int(round(hop * sample_rate)))
    if n_samples <= size:
        return [(0, n_samples)]
    spans = [(s, s + size) for s in range(0, n_samples - size + 1, step)]
    if spans[-1][1] < n_samples:
        spans.append((n_samples - size, n_samples))
    return spans


# ------------------------------------------------------------------------------------ rows
def _columns(clf, manifest: bool, windows: bool) -> List[str]:
    cfg = clf.config
    head = ["id", "path"] if manifest else ["path"]
    if windows:
        head += ["window", "start", "end"]
    if cfg.kind == "classification":
        truth = ["truth"] if manifest else []
        return head + truth + ["pred"] + [f"prob_{label}" for label in cfg.labels]
    truth = [f"true_{t}" for t in cfg.targets] if manifest else []
    return head + truth + [f"pred_{t}" for t in cfg.targets]


def _pred_cells(clf, outputs: torch.Tensor) -> List[Row]:
    """Formatting as `DownstreamExpert._write_predictions` does for the columns both files share."""
    rows = []
    for p in clf.to_predictions(outputs):
        if clf.config.kind == "classification":
            rows.append({"pred": p.label, **{f"prob_{k}": f"{v:.6f}" for k, v in p.probabilities.items()}})
        else:
            rows.append({f"pred_{k}": f"{v:.4f}" for k, v in p.values.items()})
    return rows


def _mean_row(clf, outputs: torch.Tensor) -> Row:
    """One file from its windows: mean class probabilities (argmax = label), or mean regression values."""
    if clf.config.kind == "classification":
        probs = torch.softmax(outputs.float(), dim=-1).mean(dim=0)
        labels = clf.config.labels
        return {"pred": labels[int(probs.argmax())], **{f"prob_{k}": f"{float(v):.6f}" for k, v in zip(labels, probs)}}
    mean = outputs.float().mean(dim=0)
    return {f"pred_{k}": f"{float(v):.4f}" for k, v in zip(clf.config.targets, mean)}


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="file", dynamic_ncols=True, file=sys.stderr)


def _reason(e: Exception) -> str:
    return getattr(e, "problem", None) or str(e).strip().splitlines()[0]


# ------------------------------------------------------------------------------- predicting
def predict_files(clf, paths: Sequence[Path], batch_size: Optional[int] = None, window: Optional[float] = None,
                  hop: Optional[float] = None, progress: bool = False) -> Tuple[List[Row], List[Tuple[str, str]]]:
    """Rows of predictions.csv for audio files, and (file, reason) for those skipped."""
    bs = max(1, batch_size or clf.config.audio.batch_size)
    sr = clf.config.audio.sample_rate
    rows: List[Row] = []
    skipped: List[Tuple[str, str]] = []
    pending: List[Tuple[Path, torch.Tensor]] = []
    long_files = 0

    def flush():
        if pending:
            outputs = clf([w for _, w in pending])
            rows.extend({"path": str(p), **cells} for (p, _), cells in zip(pending, _pred_cells(clf, outputs)))
            pending.clear()

    max_s = clf.config.audio.max_seconds
    with _progress(len(paths), progress, "predict") as bar:
        for path in paths:
            try:
                wav = _read(path, sr)
            except (AudioError, OSError) as e:
                skipped.append((str(path), _reason(e)))
                bar.update(1)
                continue
            if window is None:
                if max_s is not None and wav.numel() > max_s * sr:
                    long_files += 1
                pending.append((path, clf.crop_or_pad(wav)))
                if len(pending) >= bs:
                    flush()
            else:
                spans = window_spans(wav.numel(), sr, window, hop or window)
                outputs = torch.cat([clf([clf.crop_or_pad(wav[s:e]) for s, e in spans[i:i + bs]])
                                     for i in range(0, len(spans), bs)])
                for k, ((s, e), cells) in enumerate(zip(spans, _pred_cells(clf, outputs))):
                    rows.append({"path": str(path), "window": str(k), "start": f"{s / sr:.3f}",
                                 "end": f"{e / sr:.3f}", **cells})
                rows.append({"path": str(path), "window": "mean", "start": "0.000",
                             "end": f"{wav.numel() / sr:.3f}", **_mean_row(clf, outputs)})
            bar.update(1)
        flush()
    if long_files:
        print(f"[predict] - {long_files} file(s) longer than {max_s} s: only their first {max_s} s were used "
              f"(the run's audio rule); use --window S --hop S for whole recordings", file=sys.stderr)
    return rows, skipped


def _read(path: Path, sample_rate: int) -> torch.Tensor:
    from care_core.audio import read_mono

    wav, _, _ = read_mono(path, sample_rate)
    return wav


def predict_manifest(clf, manifest: Path, split: str, fold: Optional[str] = None,
                     progress: bool = False) -> Tuple[List[Row], List[Tuple[str, str]]]:
    """Rows for one split of a prepared task, batched exactly as `Runner.evaluate` batches it."""
    from downstream_tasks.audio import AudioConfig
    from downstream_tasks.dataset import ManifestDataset, split_rows
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.protocol import get_task

    cfg = clf.config
    spec = get_task(cfg.task)
    fold = fold or cfg.fold
    rows_by_split = split_rows(read_manifest(manifest), spec, fold)
    if split not in rows_by_split:
        raise ValueError(f"--split must be one of {', '.join(rows_by_split)}, got {split!r}")
    audio = AudioConfig(cfg.audio.sample_rate, cfg.audio.max_seconds, cfg.audio.min_seconds)
    ds = ManifestDataset(rows_by_split[split], spec, audio)
    out: List[Row] = []
    skipped: List[Tuple[str, str]] = []
    batch: List[Tuple[object, object, str, str]] = []

    def flush():
        if not batch:
            return
        outputs = clf([b[0] for b in batch])
        for (_, target, uid, path), cells in zip(batch, _pred_cells(clf, outputs)):
            if cfg.kind == "classification":
                truth = {"truth": cfg.labels[target]}
            else:
                truth = {f"true_{t}": f"{float(x):.4f}" for t, x in zip(cfg.targets, target)}
            out.append({"id": uid, "path": path, **truth, **cells})
        batch.clear()

    with _progress(len(ds), progress, f"predict {split}") as bar:
        for i in range(len(ds)):
            try:
                wav, target, uid = ds[i]
            except (AudioError, OSError) as e:
                skipped.append((ds.rows[i].path, _reason(e)))
                bar.update(1)
                continue
            batch.append((wav, target, uid, ds.rows[i].path))
            if len(batch) >= cfg.audio.batch_size:
                flush()
            bar.update(1)
        flush()
    return out, skipped


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Row]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(path, buf.getvalue())


def skipped_path(out: Path) -> Path:
    return out.with_name(out.stem + "_skipped.csv")


def run_predict(cfg: PredictConfig) -> Tuple[int, int]:
    """Write predictions (and the skipped list, if any); return (rows written, files skipped)."""
    from care_superb.audio_inputs import collect_audio
    from care_superb.classifier import EmotionClassifier

    if cfg.manifest is None and not cfg.audio:
        raise ValueError("give audio (files, folders or a list file) or --manifest with --split")
    if cfg.manifest is not None and cfg.audio:
        raise ValueError("give either audio or --manifest, not both")
    if cfg.hop is not None and cfg.window is None:
        raise ValueError("--hop needs --window")
    if cfg.manifest is not None and cfg.window is not None:
        raise ValueError("--window applies to audio files, not to --manifest splits (their rows are already cut)")
    paths = collect_audio(cfg.audio) if cfg.audio else []
    clf = EmotionClassifier.from_pretrained(cfg.model, revision=cfg.revision, device=cfg.device,
                                            upstream_ckpt=cfg.upstream_ckpt, checkpoint=cfg.checkpoint)
    if cfg.batch_size:
        clf.config.audio.batch_size = cfg.batch_size
    if cfg.manifest is not None:
        rows, skipped = predict_manifest(clf, cfg.manifest, cfg.split, cfg.fold, cfg.progress)
    else:
        rows, skipped = predict_files(clf, paths, cfg.batch_size, cfg.window, cfg.hop, cfg.progress)
    if skipped:
        write_skipped(skipped_path(cfg.out), skipped)
        print(f"[predict] - skipped {len(skipped)} file(s), listed in {skipped_path(cfg.out)}:", file=sys.stderr)
        for path, reason in skipped[:20]:
            print(f"  {path}: {reason}", file=sys.stderr)
    if not rows:
        raise ValueError(f"no file could be read ({len(skipped)} skipped, see {skipped_path(cfg.out)}); "
                         f"nothing written to {cfg.out}")
    write_csv(cfg.out, _columns(clf, cfg.manifest is not None, cfg.window is not None), rows)
    return len(rows), len(skipped)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="care-superb predict",
        description="Predict emotions of audio files with a trained probe: a run folder (result/downstream/<exp>), "
                    "an exported classifier folder, or a Hugging Face Hub id (org/name[@rev]). Writes predictions.csv: "
                    "path, predicted label, one probability column per class (V/A/D values for regression).")
    p.add_argument("model", help="run folder, its .ckpt, classifier folder, or Hub id")
    p.add_argument("audio", nargs="*", type=Path,
                   help="audio files, folders (searched recursively) or list files (.txt/.lst: one path per line)")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default: predictions.csv)")
    p.add_argument("--manifest", type=Path, help="a prepared task's manifest.csv (or its folder) instead of audio")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="manifest split (default: test)")
    p.add_argument("--fold", help="manifest fold (default: the run's fold)")
    p.add_argument("--checkpoint", default="dev-best.ckpt", help="checkpoint in a run folder (default: dev-best.ckpt)")
    p.add_argument("--batch-size", type=int, help="files per forward pass (default: the run's eval batch size)")
    p.add_argument("--window", type=float, help="cut each file into windows of this many seconds")
    p.add_argument("--hop", type=float, help="seconds between window starts (default: --window)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--upstream-ckpt", help="upstream weights (path or Hub id) replacing the ones the run recorded")
    p.add_argument("--revision", help="Hub revision of the model (branch, tag or commit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    a = build_parser().parse_args(argv)
    if a.hop is not None and a.window is None:
        build_parser().error("--hop needs --window")
    cfg = PredictConfig(model=a.model, audio=list(a.audio), out=a.out, manifest=a.manifest, split=a.split,
                        fold=a.fold, checkpoint=a.checkpoint, batch_size=a.batch_size, window=a.window,
                        hop=a.hop if a.hop is not None else a.window, device=a.device,
                        upstream_ckpt=a.upstream_ckpt, revision=a.revision, progress=not a.no_progress)
    try:
        n, skipped = run_predict(cfg)
    except (ValueError, FileNotFoundError, KeyError) as e:  # ClassifierError, InputError, HubError, AudioError
        print(f"care-superb predict: {str(e).strip(chr(39))}", file=sys.stderr)
        raise SystemExit(2)
    print(f"wrote {n} rows to {cfg.out}" + (f"; skipped {skipped} file(s)" if skipped else ""))
