"""What a CARE model's hidden states carry: ridge probes from every layer to the teachers' targets.

    care-pretrain diagnose --targets CACHE --model init=FOLDER --model trained=RUN/ckpt_best.pt --out DIR

Why it exists: a falling pre-training loss says the *heads* fit the teachers; a downstream probe reads
the *states*. This fits a closed-form ridge regression from each layer's states to three targets, on
utterances held out from the fit, and reports the coefficient of determination R²:

- ``acoustic_frames``: each 50 Hz frame's state -> that frame's acoustic target (what the acoustic
  branch is trained to carry; frames are subsampled to ``max_frames``);
- ``acoustic_utterance``: the time-pooled state -> the utterance mean *and* standard deviation of the
  acoustic target frames. The standard deviation is there because the cache normalises each
  utterance's frames to zero mean (the authors' recipe), which leaves the mean constant (R² undefined)
  and keeps an utterance's level only in its spread;
- ``semantic``: the time-pooled state -> the sentence embedding.

Layers follow the upstream's 13 hidden states: 0 is the front end's projection, 1-6 the common
encoder, 7-12 the acoustic and the semantic branch (both reported). R² pools all target dimensions
(1 - total squared error / total variance around the fit split's mean), so 0 means "no better than
predicting the mean" and it can go below 0 on held-out data. Utterances, not speakers, are held
out (a cache records no speaker): the numbers compare models on one cache, they are not a benchmark.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from care_core import atomic
from care_core.constants import SAMPLE_RATE

TARGET_KINDS = ("acoustic_frames", "acoustic_utterance", "semantic")
BRANCHES = ("common", "acoustic", "semantic")


class DiagnoseError(ValueError):
    """A model or target cache the diagnostic cannot use (names the file and the problem)."""


@dataclass(frozen=True)
class DiagnoseConfig:
    max_utterances: int = 400
    """Utterances read from the cache (an evenly spaced subset of its sorted ids beyond that)."""
    test_fraction: float = 0.3
    """Share of those utterances held out: R² is measured on them only."""
    max_frames: int = 20000
    """Frames kept for ``acoustic_frames`` (every k-th frame of each utterance)."""
    alphas: Tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
    """Ridge strengths tried; the one with the best R² on a validation slice of the fit split wins."""
    batch_size: int = 8
    seed: int = 0


@dataclass
class LayerScore:
    layer: int
    branch: str
    target: str
    r2: float
    alpha: float


# ------------------------------------------------------------------------------------------
# ridge regression (closed form via the SVD, every alpha from one decomposition)
# ------------------------------------------------------------------------------------------
def _standardise(x_fit: np.ndarray, x_eval: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    mu, sd = x_fit.mean(0), x_fit.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return (x_fit - mu) / sd, (x_eval - mu) / sd


def _ridge_predictions(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray,
                       alphas: Sequence[float]) -> List[np.ndarray]:
    """Predictions on ``x_eval`` for each alpha; x standardised on the fit rows, y centred on them."""
    xf, xe = _standardise(x_fit, x_eval)
    y_mean = y_fit.mean(0)
    u, s, vt = np.linalg.svd(xf, full_matrices=False)
    uty = u.T @ (y_fit - y_mean)
    return [xe @ (vt.T @ ((s / (s ** 2 + a))[:, None] * uty)) + y_mean for a in alphas]


def r2_score(y_true: np.ndarray, y_pred: np.ndarray, y_ref_mean: np.ndarray) -> float:
    """Pooled R² over all dimensions, the baseline being the fit split's mean (a held-out R²)."""
    sst = float(((y_true - y_ref_mean) ** 2).sum())
    if sst <= 1e-12:
        return float("nan")
    return 1.0 - float(((y_true - y_pred) ** 2).sum()) / sst


def ridge_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
             alphas: Sequence[float], seed: int = 0) -> Tuple[float, float]:
    """Held-out R² of a ridge map x -> y and the alpha chosen.

    ``train`` / ``test`` are row indices. alpha is picked on a 20 % validation slice of ``train``
    (the test rows never choose anything), then the model is refitted on all of ``train``.
    Target columns that are constant on the fit rows are dropped (nothing to explain).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    keep = y[train].std(0) > 1e-8
    if not keep.any():
        return float("nan"), float("nan")
    y = y[:, keep]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(train)
    n_val = max(1, len(perm) // 5)
    val, fit = perm[:n_val], perm[n_val:]
    preds = _ridge_predictions(x[fit], y[fit], x[val], alphas)
    scores = [r2_score(y[val], p, y[fit].mean(0)) for p in preds]
    best = int(np.nanargmax(scores)) if not all(np.isnan(scores)) else 0
    alpha = float(alphas[best])
    pred = _ridge_predictions(x[train], y[train], x[test], [alpha])[0]
    return r2_score(y[test], pred, y[train].mean(0)), alpha


# ------------------------------------------------------------------------------------------
# states and targets
# ------------------------------------------------------------------------------------------
def load_model(path: str):
    """A CARE upstream folder / .safetensors, or a trainer checkpoint (``ckpt_*.pt`` or a run folder)."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "config.json").is_file():
        from pretrain.export import model_from_checkpoint, resolve_checkpoint

        return model_from_checkpoint(resolve_checkpoint(p, "best"))[0]
    if p.is_file() and p.suffix == ".pt":
        from pretrain.export import model_from_checkpoint
        from pretrain.train import CheckpointError, load_checkpoint

        try:
            ckpt = load_checkpoint(p)
        except CheckpointError:
            pass  # not a trainer checkpoint: CARE.from_pretrained reads {"config", "model"} files
        else:
            return model_from_checkpoint(p, ckpt)[0]
    from care_upstream.model import CARE

    try:
        return CARE.from_pretrained(p).eval()
    except (FileNotFoundError, ValueError) as e:
        raise DiagnoseError(f"{path}: not a CARE model ({e})") from None


def save_initial_model(tc, out: str):
    """Write the model a ``pretrain.train`` run with config ``tc`` starts from (its step 0).

    The trainer seeds torch with ``tc.seed`` (rank 0) and then builds the model before drawing any
    other random number, so seeding the same way and calling the same builder gives the same weights.
    That is the fair baseline for "did pre-training add anything": the very init the run started from.
    """
    import torch

    from pretrain.targets.store import TargetStore
    from pretrain.train import build_model

    store = TargetStore(tc.target_cache)
    torch.manual_seed(tc.seed)
    model = build_model(tc, store.semantic_dim, store.acoustic_dim).eval()
    model.save_pretrained(out)
    return model


def pick_ids(ids: Sequence[str], n: int) -> List[str]:
    """An evenly spaced, deterministic subset of the sorted ids (so every class/speaker block is hit)."""
    ids = sorted(ids)
    if len(ids) <= n:
        return ids
    return [ids[i] for i in np.linspace(0, len(ids) - 1, n).round().astype(int)]


def collect(model, store, ids: Sequence[str], cfg: DiagnoseConfig):
    """Per utterance: pooled states per (layer, branch), strided frame states, and the targets.

    Returns ``pooled[(layer, branch)] (N, H)``, ``frames[(layer, branch)] (M, H)``, ``frame_utt (M,)``
    (which utterance each frame row is from), ``ac_frames (M, F)``, ``ac_utt (N, 2F)``, ``sem (N, D)``.
    """
    import torch

    from pretrain.data import load_audio

    model.eval()
    total_frames = sum(store.num_frames(u) for u in ids)
    stride = max(1, int(np.ceil(total_frames / cfg.max_frames)))
    pooled: Dict[Tuple[int, str], List[np.ndarray]] = {}
    frames: Dict[Tuple[int, str], List[np.ndarray]] = {}
    frame_utt, ac_frames, ac_utt, sem = [], [], [], []
    for start in range(0, len(ids), cfg.batch_size):
        chunk = ids[start:start + cfg.batch_size]
        wavs = [load_audio(store.path(u), SAMPLE_RATE) for u in chunk]
        lengths = torch.tensor([w.numel() for w in wavs])
        batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        with torch.no_grad():
            out = model(batch, lengths)
        layers = {(0, "common"): out.conv}
        layers.update({(i + 1, "common"): h for i, h in enumerate(out.common)})
        n_c = len(out.common)
        layers.update({(n_c + 1 + i, "acoustic"): h for i, h in enumerate(out.acoustic)})
        layers.update({(n_c + 1 + i, "semantic"): h for i, h in enumerate(out.semantic)})
        for b, utt in enumerate(chunk):
            tg = store.get(utt)
            n = int(out.frame_lengths[b])
            ac = np.asarray(tg["acoustic"], np.float32)
            t = min(n, ac.shape[0])
            if t < 1:
                raise DiagnoseError(f"{store.path(utt)}: no frame both in the model output and the target")
            rows = np.arange(0, t, stride)
            for key, h in layers.items():
                hb = h[b, :n].float().cpu().numpy()
                pooled.setdefault(key, []).append(hb.mean(0))
                frames.setdefault(key, []).append(hb[rows])
            frame_utt.append(np.full(len(rows), start + b))
            ac_frames.append(ac[rows])
            ac_utt.append(np.concatenate([ac[:t].mean(0), ac[:t].std(0)]))
            sem.append(np.asarray(tg["semantic"], np.float32))
    return ({k: np.stack(v) for k, v in pooled.items()}, {k: np.concatenate(v) for k, v in frames.items()},
            np.concatenate(frame_utt), np.concatenate(ac_frames), np.stack(ac_utt), np.stack(sem))


def diagnose_model(model, store, cfg: DiagnoseConfig = DiagnoseConfig()) -> List[LayerScore]:
    """R² of every (layer, branch) for every target kind, on held-out utterances."""
    ids = pick_ids(store.ids, cfg.max_utterances)
    if len(ids) < 10:
        raise DiagnoseError(f"{store.cache_dir}: {len(ids)} utterances; the diagnostic needs at least 10")
    pooled, frames, frame_utt, ac_frames, ac_utt, sem = collect(model, store, ids, cfg)
    perm = np.random.default_rng(cfg.seed).permutation(len(ids))
    n_test = max(2, int(round(len(ids) * cfg.test_fraction)))
    test_utts = np.sort(perm[:n_test])
    train_utts = np.sort(perm[n_test:])
    is_test_frame = np.isin(frame_utt, test_utts)
    f_train, f_test = np.flatnonzero(~is_test_frame), np.flatnonzero(is_test_frame)
    scores = []
    for (layer, branch) in sorted(pooled, key=lambda k: (k[0], BRANCHES.index(k[1]))):
        for target in TARGET_KINDS:
            if target == "acoustic_frames":
                r2, alpha = ridge_r2(frames[(layer, branch)], ac_frames, f_train, f_test, cfg.alphas, cfg.seed)
            else:
                y = ac_utt if target == "acoustic_utterance" else sem
                r2, alpha = ridge_r2(pooled[(layer, branch)], y, train_utts, test_utts, cfg.alphas, cfg.seed)
            scores.append(LayerScore(layer, branch, target, r2, alpha))
    return scores


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def curves(scores: List[LayerScore], target: str, branch: str) -> Tuple[List[int], List[float]]:
    """One branch's R² over layers 0..12 (the common layers feed both upper branches)."""
    rows = [s for s in scores if s.target == target and s.branch in ("common", branch)]
    rows.sort(key=lambda s: s.layer)
    return [s.layer for s in rows], [s.r2 for s in rows]


def table_markdown(results: Dict[str, List[LayerScore]]) -> str:
    labels = list(results)
    head = "| layer | branch | " + " | ".join(f"{lab} {t}" for t in TARGET_KINDS for lab in labels) + " |"
    lines = [head, "|" + "---|" * (2 + len(TARGET_KINDS) * len(labels))]
    first = results[labels[0]]
    keys = sorted({(s.layer, s.branch) for s in first}, key=lambda k: (k[0], BRANCHES.index(k[1])))
    index = {lab: {(s.layer, s.branch, s.target): s.r2 for s in sc} for lab, sc in results.items()}
    for layer, branch in keys:
        cells = [f"{index[lab].get((layer, branch, t), float('nan')):.3f}" for t in TARGET_KINDS for lab in labels]
        lines.append(f"| {layer} | {branch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: Dict[str, List[LayerScore]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TARGET_KINDS), figsize=(4.2 * len(TARGET_KINDS), 3.4), sharex=True)
    styles = ["-", "--", ":", "-."]
    for ax, target in zip(axes, TARGET_KINDS):
        for i, (label, scores) in enumerate(results.items()):
            for branch, colour in (("acoustic", "tab:red"), ("semantic", "tab:blue")):
                x, y = curves(scores, target, branch)
                ax.plot(x, y, styles[i % len(styles)], color=colour, marker=".", label=f"{label} {branch}")
        ax.axvline(6.5, color="grey", lw=0.5)
        ax.set_title(target.replace("_", " "))
        ax.set_xlabel("layer (0 front end, 1-6 common, 7-12 branch)")
        ax.set_ylim(bottom=max(-0.2, ax.get_ylim()[0]))
    axes[0].set_ylabel("held-out R²")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def run(models: Dict[str, str], target_cache: str, out: Optional[str], cfg: DiagnoseConfig,
        make_plot: bool = True) -> Dict[str, List[LayerScore]]:
    from pretrain.targets.store import TargetStore, TargetStoreError

    try:
        store = TargetStore(target_cache)
    except (TargetStoreError, FileNotFoundError, OSError) as e:
        raise DiagnoseError(f"{target_cache}: not a readable target cache ({e})") from None
    results = {label: diagnose_model(load_model(path), store, cfg) for label, path in models.items()}
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(out_dir / "diagnose.json", {
            "target_cache": str(target_cache), "models": models, "config": asdict(cfg),
            "scores": {lab: [asdict(s) for s in sc] for lab, sc in results.items()}})
        atomic.write_text(out_dir / "diagnose.md", table_markdown(results))
        if make_plot:
            plot(results, out_dir / "diagnose.png")
    return results


def parse_models(items: Sequence[str]) -> Dict[str, str]:
    """``label=path`` or ``path`` (labelled by its name) -> ordered {label: path}."""
    models: Dict[str, str] = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = Path(item).name or item, item
        if label in models:
            raise DiagnoseError(f"--model label {label!r} given twice")
        models[label] = path
    return models


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DiagnoseConfig()
    p.add_argument("--targets", required=True, help="target cache folder (care-pretrain targets --out)")
    p.add_argument("--model", action="append", required=True,
                   help="[label=]CARE folder, trainer run folder or ckpt_*.pt; repeat to compare (e.g. init, trained)")
    p.add_argument("--out", help="folder for diagnose.json, diagnose.md and diagnose.png")
    p.add_argument("--max-utterances", type=int, default=d.max_utterances)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--max-frames", type=int, default=d.max_frames)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-plot", action="store_true")


def main_args(args: argparse.Namespace) -> int:
    if not 0 < args.test_fraction < 1:
        raise DiagnoseError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    cfg = DiagnoseConfig(max_utterances=args.max_utterances, test_fraction=args.test_fraction,
                         max_frames=args.max_frames, seed=args.seed)
    results = run(parse_models(args.model), args.targets, args.out, cfg, make_plot=not args.no_plot)
    print(table_markdown(results), end="")
    if args.out:
        print(f"wrote {args.out}/diagnose.json, diagnose.md" + ("" if args.no_plot else ", diagnose.png"),
              file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="care-pretrain diagnose", description=__doc__.split("\n")[0])
    add_arguments(p)
    try:
        return main_args(p.parse_args(argv))
    except DiagnoseError as e:
        print(f"care-pretrain diagnose: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
