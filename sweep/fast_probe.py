"""Train the stock probe on cached per-layer time-means, step for step as s3prl's runner would.

What is reused, unchanged: s3prl's argument parsing and config overrides (`get_downstream_args`),
the task's `DownstreamExpert` (its datasets, dataloaders, `ProbeHead`, loss, `log_records` with its
dev-best selection and metric files), s3prl's optimizer/scheduler factories, and the runner's loop
(gradient clipping, eval every `eval_step`, the re-seeding at every evaluation, `-m evaluate` on the
dev-best weights). What is replaced: the upstream + `Featurizer` pair, by `CachedFeaturizer` over the
cache (see `sweep.cache` for why that is exact when the upstream is frozen and normalize is off).

Same random numbers as the stock run of the same seed: s3prl seeds, *then* builds the upstream and
the Featurizer (which draws 1 s of noise), then the expert (head init). Building an upstream draws
random numbers (module init before the checkpoint is loaded), so the fast path replays that prelude
once per (upstream, seed, device) and remembers the generator states it ends in (`PreludeState`).
Batches come from the expert's own samplers, iterated over indices only (no audio is read), which
draws the same numbers as the stock loader: one base seed per iterator, one shuffle seed per epoch.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from sweep.cells import ConfigError


class FastPathUnavailable(ConfigError):
    """The fast path would not reproduce the stock probe for this cell (reason in the message)."""


# ------------------------------------------------------------------------------- s3prl arguments
def stock_argv(mode: str, task: str, upstream_hub: str, ckpt: Optional[str], expdir: os.PathLike, seed: int,
               overrides: Sequence[str] = (), device: Optional[str] = None, normalize: bool = False,
               trainable: bool = False, extra: Sequence[str] = ()) -> List[str]:
    """The exact `run_downstream.py` arguments of a stock cell (shared with the stock fallback)."""
    argv = ["-m", mode, "-u", upstream_hub, "-d", task, "-p", str(expdir), "--seed", str(seed)]
    if ckpt:
        argv += ["-k", str(ckpt)]
    if overrides:
        argv += ["-o", ",,".join(overrides)]
    if device:
        argv += ["--device", device]
    if normalize:
        argv.append("--upstream_feature_normalize")
    if trainable:
        argv.append("-f")
    return argv + list(extra)


@contextmanager
def _argv(argv: List[str]):
    old = sys.argv
    sys.argv = ["run_downstream.py"] + argv
    try:
        yield
    finally:
        sys.argv = old


def parse_stock_args(argv: List[str]) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    """(args, config) exactly as `run_downstream.py` would build them (default -c, --device, -o)."""
    from care_superb.launcher import complete_args
    from care_superb.s3prl_registry import register

    register()
    from s3prl.run_downstream import get_downstream_args

    with _argv(complete_args(argv)):
        args, config, _ = get_downstream_args()
    return args, config


def seed_everything(seed: int) -> None:
    """`run_downstream.main` and `Runner.evaluate` seed exactly these four."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------------------------- the prelude
@dataclass
class PreludeState:
    """Generator states right after s3prl built upstream + Featurizer, and what the expert is told."""

    torch_cpu: torch.Tensor
    torch_cuda: List[torch.Tensor]
    numpy_state: tuple
    python_state: tuple
    output_dim: int
    downsample_rate: int
    layer_num: int

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if torch.cuda.is_available() and self.torch_cuda:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy_state)
        random.setstate(self.python_state)


_PRELUDES: Dict[Tuple, PreludeState] = {}


def build_upstream(args: argparse.Namespace):
    """`Runner._get_upstream` minus DDP: the same hub call with the same keyword arguments."""
    from s3prl import hub

    Upstream = getattr(hub, args.upstream)
    return Upstream(ckpt=args.upstream_ckpt, model_config=args.upstream_model_config,
                    refresh=args.upstream_refresh).to(args.device)


def run_prelude(args: argparse.Namespace) -> PreludeState:
    """Seed, build upstream and Featurizer as the stock runner does, and keep the generator states."""
    from s3prl.upstream.interfaces import Featurizer

    key = (args.upstream, args.upstream_ckpt, args.seed, str(args.device), args.upstream_feature_selection,
           args.upstream_layer_selection)
    if key in _PRELUDES:
        return _PRELUDES[key]
    seed_everything(args.seed)
    upstream = build_upstream(args)
    featurizer = Featurizer(upstream=upstream, feature_selection=args.upstream_feature_selection,
                            layer_selection=args.upstream_layer_selection, upstream_device=args.device,
                            normalize=args.upstream_feature_normalize).to(args.device)
    state = PreludeState(
        torch_cpu=torch.get_rng_state(),
        torch_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        numpy_state=np.random.get_state(), python_state=random.getstate(),
        output_dim=int(featurizer.output_dim), downsample_rate=int(featurizer.downsample_rate),
        layer_num=int(getattr(featurizer, "layer_num", 1)))
    del upstream, featurizer
    _PRELUDES[key] = state
    return state


# ------------------------------------------------------------------------------- index batches
class _IndexDataset(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _identity(batch):
    return batch


def index_batches(dataloader: DataLoader):
    """The stock loader's batches as index lists, drawing the same random numbers, reading no audio."""
    if dataloader.batch_sampler is None:
        raise FastPathUnavailable("the expert's dataloader has no batch sampler")
    return DataLoader(_IndexDataset(len(dataloader.dataset)), batch_sampler=dataloader.batch_sampler,
                      collate_fn=_identity, num_workers=0, generator=dataloader.generator)


def _batch_items(dataset, idx: Sequence[int]) -> Tuple[tuple, tuple]:
    """(labels, ids) as `collate` would give them, from the dataset's rows without loading audio."""
    if not (hasattr(dataset, "rows") and hasattr(dataset, "target")):
        raise FastPathUnavailable(f"{type(dataset).__name__} has no rows/target: cannot batch without audio")
    rows = [dataset.rows[i] for i in idx]
    return tuple(dataset.target(r) for r in rows), tuple(r.id for r in rows)


class _NullLogger:
    """`log_records` writes TensorBoard scalars; the fast path has no use for them."""

    def add_scalar(self, *a, **k):
        pass

    def add_text(self, *a, **k):
        pass

    def add_histogram(self, *a, **k):
        pass

    def close(self):
        pass


# --------------------------------------------------------------------------------------- train
@dataclass
class FastResult:
    layer_weights: List[float]
    best_step: Optional[int]
    steps: int
    skipped: List[str] = field(default_factory=list)
    seconds: float = 0.0


PAD_MODES = ("alone", "zero")


def replay_padded_means(means: torch.Tensor, frames: Sequence[Tuple[int, int, int]], rate: int,
                        pad_mode: str) -> torch.Tensor:
    """The time-means the stock runner averages for one padded batch, from each utterance's solo means.

    `means` (B, L, D) cached time-means; `frames[i]` = (frames averaged alone, frames produced alone,
    waveform samples). s3prl's `Featurizer.tolist` keeps round(samples / rate) frames of the *batch*
    output (capped at the batch's frame count), which can be more than the utterance produced alone
    (WavLM-style convs give 49 frames for 1 s, round gives 50), so the stock mean takes in up to a
    few frames computed at padding positions.

    "zero": the upstream zeroes them (its expert says ``padding_exact``), so the stock mean is the
    solo mean × used / kept: exact. "alone": the solo mean as is, i.e. what the stock runner gives
    with batch size 1 or an upstream whose frame count is round(len / rate); for upstreams that leave
    other values in padding frames (s3prl's WavLM/HuBERT) no replay is possible and this is the
    principled choice.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if pad_mode == "alone":
        return means
    t_batch = max(produced for _, produced, _ in frames)
    kept = [min(round(samples / rate), t_batch) for _, _, samples in frames]
    scale = torch.tensor([used / k for (used, _, _), k in zip(frames, kept)], dtype=means.dtype)
    return means * scale[:, None, None]


class CachedFeaturizer(nn.Module):
    """Stands in for s3prl's Featurizer: `downstream_tasks.probe.LayerWeights` holds the same parameter
    (`weights`, zeros, the same name in the state dict) and the same softmax mix, applied to (B, L, D)
    cached time-means. Each utterance becomes a (1, D) "sequence", so the expert's masked mean over it
    is the identity."""

    def __init__(self, layer_num: int):
        super().__init__()
        from downstream_tasks.probe import LayerWeights

        self.mix = LayerWeights(layer_num)

    @property
    def weights(self) -> nn.Parameter:
        return self.mix.weights

    def forward(self, means: torch.Tensor) -> List[torch.Tensor]:
        mixed = self.mix(means.transpose(0, 1))  # (L, B, D) -> (B, D)
        return list(mixed[:, None, :])


def train_fast(args: argparse.Namespace, config: Dict[str, Any], features: Mapping[str, torch.Tensor],
               frames: Optional[Mapping[str, Tuple[int, int, int]]] = None, failed: Mapping[str, str] = {},
               pad_mode: str = "alone", log: Callable[[str], None] = lambda s: None) -> FastResult:
    """Runner.train then Runner.evaluate('test') on the dev-best weights, with the cache for features.

    `features`: utterance id → (L, D) time-means; utterances in `failed` (the upstream could not run
    on them) are dropped from their split and listed in the result; any other missing id is an error.

    `pad_mode` says what the stock runner averaged for an utterance in a padded batch
    (`replay_padded_means`). The expert's figures are drawn for the final test evaluation only
    (files, not numbers: the stock run draws them at every evaluation).
    """
    import importlib

    t0 = time.time()
    if args.upstream_feature_normalize:
        raise FastPathUnavailable("Featurizer normalize=True: layer norm per frame does not commute with the time mean")
    if args.upstream_trainable:
        raise FastPathUnavailable("a trainable upstream changes its features during training")
    if config.get("specaug"):
        raise FastPathUnavailable("SpecAugment acts on frames, not on time means")
    if config["runner"].get("fp16"):
        raise FastPathUnavailable("fp16 autocast in the stock runner is not replayed")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if pad_mode == "zero" and frames is None:
        raise ValueError("pad_mode='zero' needs the cached frame counts")
    device = torch.device(args.device)
    prelude = run_prelude(args)
    prelude.restore()

    expert_mod = importlib.import_module(f"s3prl.downstream.{args.downstream}.expert")
    expert = expert_mod.DownstreamExpert(upstream_dim=prelude.output_dim, upstream_rate=prelude.downsample_rate,
                                         **config, **vars(args)).to(device)
    featurizer = CachedFeaturizer(prelude.layer_num).to(device)
    skipped: List[str] = []
    _drop_failed(expert, failed, skipped)

    rate = prelude.downsample_rate

    def batch_features(ids) -> List[torch.Tensor]:
        try:
            means = torch.stack([features[i] for i in ids])
        except KeyError as e:
            raise FastPathUnavailable(f"utterance {e.args[0]} has no cached features") from None
        fr = [frames[i] for i in ids] if pad_mode == "zero" else []
        return featurizer(replay_padded_means(means, fr, rate, pad_mode).to(device))

    from s3prl.optimizers import get_optimizer
    from s3prl.schedulers import get_scheduler

    runner_cfg = config["runner"]
    total_steps = runner_cfg["total_steps"]
    featurizer.train()
    expert.train()
    trainable_models = [featurizer, expert]
    trainable_paras = list(featurizer.parameters()) + list(expert.parameters())
    optimizer = get_optimizer(trainable_models, total_steps, config["optimizer"])
    scheduler = get_scheduler(optimizer, total_steps, config["scheduler"]) if config.get("scheduler") else None
    logger = _NullLogger()

    def evaluate(split: str, global_step: int, figures: bool = False) -> List[str]:
        seed_everything(args.seed)
        trainings = [featurizer.training, expert.training]
        featurizer.eval()
        expert.eval()
        dl = expert.get_dataloader(split)
        evaluate_steps = round(len(dl) * float(runner_cfg.get("evaluate_ratio", 1)))
        records = _records()
        batch_ids = []
        for batch_id, idx in enumerate(index_batches(dl)):
            if batch_id > evaluate_steps:
                break
            labels, ids = _batch_items(dl.dataset, idx)
            with torch.no_grad():
                expert(split, batch_features(ids), labels, ids, records=records, batch_id=batch_id)
            batch_ids.append(batch_id)
        names = expert.log_records(split, records=records, logger=logger, global_step=global_step,
                                   batch_ids=batch_ids, total_batch_num=len(dl), figures=figures)
        if trainings[0]:
            featurizer.train()
        if trainings[1]:
            expert.train()
        return names if isinstance(names, list) else []

    step, best_state, best_step = _train_loop(
        expert=expert, featurizer=featurizer, optimizer=optimizer, scheduler=scheduler, runner_cfg=runner_cfg,
        trainable_paras=trainable_paras, batch_features=batch_features, evaluate=evaluate, logger=logger, log=log)

    # `-m evaluate -e dev-best.ckpt`: the dev-best weights. Without any dev evaluation (total_steps <
    # eval_step) the stock runner leaves no dev-best.ckpt and its cell fails; so does this one.
    if best_state is None:
        raise ConfigError(f"no dev-best model: {step} steps never reached an evaluation "
                          f"(eval_step {runner_cfg['eval_step']}, eval_dataloaders {runner_cfg['eval_dataloaders']}); "
                          "lower config.runner.eval_step or raise config.runner.total_steps")
    featurizer.load_state_dict(best_state[0])
    expert.load_state_dict(best_state[1])
    # the stock expert reads the step of the evaluated checkpoint from it; here the step is passed
    evaluate("test", best_step or 0, figures=True)
    weights = torch.softmax(featurizer.weights.detach().cpu(), dim=-1).tolist()
    return FastResult(layer_weights=weights, best_step=best_step, steps=step, skipped=skipped,
                      seconds=time.time() - t0)


def _train_loop(*, expert, featurizer, optimizer, scheduler, runner_cfg, trainable_paras, batch_features,
                evaluate, logger, log) -> Tuple[int, Optional[tuple], Optional[int]]:
    """`Runner.train`'s loop, statement for statement; returns (steps, dev-best states, dev-best step)."""
    total_steps = runner_cfg["total_steps"]
    accumulate = runner_cfg.get("gradient_accumulate_steps")
    best_state, best_step = None, None
    step = 0
    epoch = 0
    backward_steps = 0
    batch_ids: List[int] = []
    records = _records()
    train_split = runner_cfg.get("train_dataloader", "train")
    while step < total_steps:
        try:
            dl = expert.get_dataloader(train_split, epoch=epoch)
        except TypeError as e:
            if "unexpected keyword argument 'epoch'" not in str(e):
                raise
            dl = expert.get_dataloader(train_split)
        for batch_id, idx in enumerate(index_batches(dl)):
            if step >= total_steps:
                break
            global_step = step + 1
            labels, ids = _batch_items(dl.dataset, idx)
            loss = expert(train_split, batch_features(ids), labels, ids, records=records)
            batch_ids.append(batch_id)
            (loss / accumulate).backward()
            del loss
            backward_steps += 1
            if backward_steps % accumulate > 0:
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable_paras, runner_cfg["gradient_clipping"])
            if math.isnan(grad_norm):
                log(f"[fast] grad norm is NaN at step {global_step}")
            else:
                optimizer.step()
            optimizer.zero_grad()
            if scheduler:
                scheduler.step()
            if global_step % runner_cfg["log_step"] == 0:
                expert.log_records(train_split, records=records, logger=logger, global_step=global_step,
                                   batch_ids=batch_ids, total_batch_num=len(dl))
                batch_ids = []
                records = _records()
            save_names: List[str] = []
            if global_step % runner_cfg["eval_step"] == 0:
                for split in runner_cfg["eval_dataloaders"]:
                    save_names += evaluate(split, global_step)
            if any("best" in n for n in save_names):
                best_state = (copy.deepcopy(featurizer.state_dict()), copy.deepcopy(expert.state_dict()))
                best_step = global_step
            step += 1
        epoch += 1
    return step, best_state, best_step


def _records():
    from s3prl.utility.helper import defaultdict

    return defaultdict(list)


def _drop_failed(expert, failed: Mapping[str, str], skipped: List[str]) -> None:
    """Take utterances the upstream failed on out of every split the expert holds, and list them."""
    if not failed:
        return
    for name in ("train_dataset", "dev_dataset", "test_dataset", "datasets"):
        obj = getattr(expert, name, None)
        dsets = obj.values() if isinstance(obj, dict) else [obj] if obj is not None else []
        for ds in dsets:
            if hasattr(ds, "rows"):
                keep = [r for r in ds.rows if r.id not in failed]
                skipped += [r.id for r in ds.rows if r.id in failed and r.id not in skipped]
                ds.rows = keep
