"""CARE pre-training (docs/pretraining.md), one file in nanoGPT order.

    torchrun --nproc_per_node N -m pretrain.train --config pretrain/configs/care_base.yaml [--resume] [key=value ...]
    srun python -m pretrain.train --config pretrain/configs/care_base.yaml [--resume]  # Slurm tasks, no torchrun
    python -m pretrain.train --config pretrain/configs/care_tiny_demo.yaml          # one process, CPU or GPU

Ranks come from torchrun's environment or, without it, from Slurm's (``pretrain/distributed.py``);
multi-node is ``torchrun --nnodes N --rdzv-backend c10d`` or ``srun`` over N nodes
(``examples/slurm/pretrain.sbatch``).

Reads top to bottom: config -> DDP -> data -> model -> optimisers -> loss / estimate_loss / get_lr ->
checkpoints -> loop. The run folder gets ``ckpt_last.pt`` (what ``--resume`` continues from),
``ckpt_best.pt`` (lowest total validation loss; what ``care-pretrain export`` exports),
``losses.jsonl`` (one line per step) and TensorBoard events under ``tb/``.

Why the loss is normalised by the *global* step counts rather than averaged per micro-batch:
the acoustic loss is a mean over valid (non-padding) frames, and a mean of per-rank means is not
the mean over the global batch when ranks hold different amounts of padding. Dividing each
micro-batch's summed error by the global counts (one two-number all-reduce per step,
``global_counts``; the division itself is ``objective``) makes 1 process, N processes and gradient
accumulation optimise exactly the same objective.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from care_core import atomic
from pretrain import distributed
from pretrain.config import ConfigError, TrainConfig, check_resume_compatible, load_config
from pretrain.data import PretrainDataset, StepBatchSampler, collate, split_ids, val_shard
from pretrain.distributed import all_sum

CKPT_LAST = "ckpt_last.pt"
CKPT_BEST = "ckpt_best.pt"
LOSSES_FILE = "losses.jsonl"
CKPT_FORMAT = 1

# Which optimiser owns which parameters (the authors' two AdamW). Prefixes of
# ``CARE.named_parameters()``; anything matched by neither is frozen (front end, text layers).
SEMANTIC_SIDE = ("common.", "semantic.down.", "semantic.up.", "semantic.head_proj.")
ACOUSTIC_SIDE = ("acoustic.", "acoustic_head.")
FRONTEND = ("frontend.",)  # joins the semantic side only when freeze_frontend is false


class CheckpointError(ValueError):
    """A run folder or checkpoint that cannot be resumed or exported (names the file)."""


# ------------------------------------------------------------------------------------------
# loss
# ------------------------------------------------------------------------------------------
@dataclass
class LossTerms:
    """Summed squared errors and the element counts they are means over (float32/float64)."""

    sem_sse: torch.Tensor
    sem_count: torch.Tensor
    ac_sse: torch.Tensor
    ac_count: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """``[sem_sse, sem_count, ac_sse, ac_count]`` in float64: one tensor to add up or all-reduce."""
        return torch.stack([self.sem_sse.double(), self.sem_count.double(), self.ac_sse.double(),
                            self.ac_count.double()])

    @classmethod
    def from_stacked(cls, v: torch.Tensor) -> "LossTerms":
        return cls(v[0], v[1], v[2], v[3])


def loss_terms(semantic_pred: torch.Tensor, acoustic_pred: torch.Tensor, pad_mask: torch.Tensor,
               targets: Dict[str, torch.Tensor]) -> LossTerms:
    """Sums behind MSE(semantic) and the padding-excluded MSE(acoustic).

    ``acoustic_pred`` has the batch's T frames (the model trims to the longest utterance);
    the targets have the crop's frame count and are cut or zero-extended to T. A frame counts
    when it is a real target frame and a real model frame.
    """
    y_sem = targets["semantic"].to(semantic_pred.device, torch.float32)
    y_ac = targets["acoustic"].to(acoustic_pred.device, torch.float32)
    mask = targets["acoustic_mask"].to(acoustic_pred.device)
    if semantic_pred.shape != y_sem.shape:
        raise ValueError(f"semantic prediction {tuple(semantic_pred.shape)} vs target {tuple(y_sem.shape)}: "
                         f"the model's semantic_target_dim does not match the target cache")
    b, t, f = acoustic_pred.shape
    if y_ac.shape[0] != b or y_ac.shape[2] != f:
        raise ValueError(f"acoustic prediction {tuple(acoustic_pred.shape)} vs target {tuple(y_ac.shape)}: "
                         f"the model's acoustic_target_dim does not match the target cache")
    if y_ac.shape[1] >= t:
        y_ac, mask = y_ac[:, :t], mask[:, :t]
    else:
        y_ac = torch.cat([y_ac, y_ac.new_zeros(b, t - y_ac.shape[1], f)], dim=1)
        mask = torch.cat([mask, mask.new_zeros(b, t - mask.shape[1])], dim=1)
    mask = mask & ~pad_mask.to(mask.device)
    diff = (acoustic_pred.float() - y_ac) * mask[..., None]
    return LossTerms(
        sem_sse=((semantic_pred.float() - y_sem) ** 2).sum(),
        sem_count=torch.tensor(float(y_sem.numel()), dtype=torch.float64, device=y_sem.device),
        ac_sse=(diff ** 2).sum(),
        ac_count=mask.sum().to(torch.float64) * f,
    )


def objective(terms: LossTerms, lambda_acoustic: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pre-training objective (docs/pretraining.md): ``(total, semantic, acoustic)`` with
    ``total = semantic + lambda_acoustic * acoustic``, each term its summed squared error over its
    element count.

    The one place the normalisation lives: ``train_step`` gives a micro-batch's sums with the
    global step's counts (so micro-batches and ranks add up to the global batch's means),
    ``estimate_loss`` the whole validation split's sums and counts, a test one batch's own.
    """
    sem = terms.sem_sse / terms.sem_count.clamp(min=1).to(terms.sem_sse.dtype)
    ac = terms.ac_sse / terms.ac_count.clamp(min=1).to(terms.ac_sse.dtype)
    return sem + lambda_acoustic * ac, sem, ac


def global_counts(micro: Sequence, device: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """Element counts of one optimiser step's global batch, summed over micro-batches and ranks:
    every utterance's semantic dims, every valid target frame x acoustic dims (one all-reduce)."""
    counts = torch.zeros(2, dtype=torch.float64)
    for _, _, tg in micro:
        counts[0] += tg["semantic"].numel()
        counts[1] += tg["acoustic_mask"].sum().double() * tg["acoustic"].shape[-1]
    counts = all_sum(counts.to(device))
    return counts[0], counts[1]


# ------------------------------------------------------------------------------------------
# model helpers
# ------------------------------------------------------------------------------------------
def model_config_for(tc: TrainConfig, semantic_dim: int, acoustic_dim: int):
    """The CareConfig of a fresh run; head sizes follow the target cache."""
    from care_upstream.config import CareConfig

    kwargs = dict(freeze_frontend=tc.freeze_frontend, acoustic_grad_to_common=tc.acoustic_grad_to_common,
                  semantic_target_dim=semantic_dim, acoustic_target_dim=acoustic_dim)
    if tc.model_size == "tiny":
        return CareConfig.tiny(text=tc.tiny_text, **kwargs)
    return CareConfig.base(**kwargs)


def build_model(tc: TrainConfig, semantic_dim: int, acoustic_dim: int) -> nn.Module:
    """Scratch (random) or teacher-initialised CARE with heads sized for the target cache."""
    from care_upstream.model import build_care

    if tc.init_from == "scratch":
        return build_care(model_config_for(tc, semantic_dim, acoustic_dim))
    from care_upstream import load

    # No ``config=``: the teachers' own configs decide the architecture (and text_layer_start).
    model = load.build_from_teachers(
        wavlm=tc.wavlm, text=tc.text, freeze_frontend=tc.freeze_frontend,
        acoustic_grad_to_common=tc.acoustic_grad_to_common,
        semantic_target_dim=semantic_dim, acoustic_target_dim=acoustic_dim)
    got = (model.config.semantic_target_dim, model.config.acoustic_target_dim)
    if got != (semantic_dim, acoustic_dim):
        raise ConfigError(f"teacher-built model heads {got} do not match the target cache ({semantic_dim}, {acoustic_dim})")
    return model


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout rate (nn.Dropout modules and HF attention's float ``dropout``)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif isinstance(getattr(m, "dropout", None), float):
            m.dropout = p


def split_parameters(model: nn.Module, freeze_frontend: bool) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    """(semantic side, acoustic side); every other parameter gets ``requires_grad=False``."""
    sem, ac = [], []
    sem_prefixes = SEMANTIC_SIDE + (() if freeze_frontend else FRONTEND)
    for name, p in model.named_parameters():
        if name.startswith(sem_prefixes):
            sem.append(p)
        elif name.startswith(ACOUSTIC_SIDE):
            ac.append(p)
        else:
            p.requires_grad_(False)
    for group, side in ((sem, "semantic"), (ac, "acoustic")):
        if not group:
            raise ValueError(f"no {side}-side parameters found: the model's parameter names changed?")
        for p in group:
            p.requires_grad_(True)
    return sem, ac


def make_optimizer(params: List[nn.Parameter], tc: TrainConfig, device_type: str) -> torch.optim.AdamW:
    extra = dict(fused=True) if device_type == "cuda" else {}
    return torch.optim.AdamW(params, lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps,
                             weight_decay=tc.weight_decay, **extra)


def get_lr(step: int, tc: TrainConfig) -> float:
    """Constant lr (the authors'), after an optional linear warm-up."""
    if tc.warmup_steps > 0 and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    return tc.lr


# ------------------------------------------------------------------------------------------
# checkpoint helpers
# ------------------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """This process's RNG states in weights_only-loadable types (dropout, etc.)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable trainer checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a CARE trainer checkpoint (format {CKPT_FORMAT})")
    return ckpt


def truncate_losses(path: Path, last_step: int) -> None:
    """Drop lines a killed run wrote after its last checkpoint (they will be recomputed)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except (ValueError, KeyError):
            break  # a torn last line
    atomic.write_text(path, "".join(k + "\n" for k in keep))


def train_step(model: nn.Module, micro: List, optimizers: Sequence[torch.optim.Optimizer],
               scaler: torch.amp.GradScaler, ctx, tc: TrainConfig, device: Any, world: int = 1,
               ddp: bool = False) -> torch.Tensor:
    """One optimiser step over this rank's micro-batches of the global batch.

    Returns the step's global ``[semantic, acoustic]`` losses (a device tensor: no host sync).
    """
    sem_count, ac_count = global_counts(micro, device)
    step_sums = torch.zeros(2, device=device)
    for j, (wavs, lengths, tg) in enumerate(micro):
        sync_ctx = model.no_sync() if ddp and j < len(micro) - 1 else nullcontext()
        with sync_ctx:
            with ctx:
                out = model(wavs.to(device, non_blocking=True), lengths.to(device, non_blocking=True),
                            with_heads=True)
            t = loss_terms(out.semantic_pred, out.acoustic_pred, out.pad_mask, tg)
            total, sem, ac = objective(replace(t, sem_count=sem_count, ac_count=ac_count), tc.lambda_acoustic)
            # x world: DDP averages gradients over ranks, the counts are already global.
            scaler.scale(total * world).backward()
        step_sums += torch.stack([sem.detach(), ac.detach()])
    if tc.grad_clip > 0:
        for opt in optimizers:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], tc.grad_clip)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return all_sum(step_sums)


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None):
    ap = argparse.ArgumentParser(prog="python -m pretrain.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="YAML file of TrainConfig keys")
    ap.add_argument("--resume", action="store_true", help="continue <out_dir>/ckpt_last.pt")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the YAML (e.g. max_steps=10)")
    return ap.parse_args(argv)


def train(tc: TrainConfig, resume: bool = False) -> Dict[str, Any]:
    # ---- DDP from the environment (torchrun's, else Slurm's srun) ------------------------
    denv = distributed.from_environ()
    ddp = denv is not None
    want_cuda = tc.device.startswith("cuda") or (tc.device == "auto" and torch.cuda.is_available())
    if ddp:
        rank, local_rank, world = denv.rank, denv.local_rank, denv.world_size
        if want_cuda:
            device = distributed.cuda_device(local_rank)
            torch.cuda.set_device(device)
        else:
            device = "cpu"
        distributed.init_process_group(denv, backend="nccl" if want_cuda else "gloo")
    else:
        rank, local_rank, world = 0, 0, 1
        device = ("cuda" if want_cuda else "cpu") if tc.device == "auto" else tc.device
    master = rank == 0
    device_type = "cuda" if "cuda" in device else "cpu"
    if tc.batch_size % (world * tc.grad_accum):
        raise ConfigError(f"batch_size {tc.batch_size} is not divisible by world size {world} x grad_accum {tc.grad_accum}")
    micro_bs = tc.batch_size // (world * tc.grad_accum)
    if tc.torch_threads:
        torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(tc.seed + rank)
    random.seed(tc.seed + rank)
    np.random.seed(tc.seed + rank)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not tc.deterministic
        torch.backends.cudnn.allow_tf32 = not tc.deterministic
    dtype = tc.dtype
    if dtype == "auto":
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if device_type == "cuda" else "float32"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if dtype == "float16" and device_type == "cpu":
        raise ConfigError("dtype float16 needs CUDA; use bfloat16 or float32 on CPU")
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)

    out_dir = Path(tc.out_dir)
    last_path, best_path = out_dir / CKPT_LAST, out_dir / CKPT_BEST
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume and last_path.exists():
            raise CheckpointError(f"{last_path}: a run already lives in {out_dir}; pass --resume or another out_dir")

    # ---- data ---------------------------------------------------------------------------
    from pretrain.targets.store import TargetStore

    store = TargetStore(tc.target_cache)
    train_ids, val_ids = split_ids(store.ids, tc.val_fraction, tc.seed)

    # ---- model --------------------------------------------------------------------------
    from care_upstream.model import build_care

    ckpt = None
    if resume:
        ckpt = load_checkpoint(last_path)
        check_resume_compatible(tc, ckpt["config"], str(last_path))
        model = build_care(ckpt["model_config"], ckpt["model"], source=str(last_path))
    else:
        model = build_model(tc, store.semantic_dim, store.acoustic_dim)
    mcfg = model.config
    # The crop grid is the model's frame hop; the target cache must be on the same grid.
    hop = mcfg.downsample_rate
    tc.check_crop(hop)
    if tc.dropout >= 0:
        set_dropout(model, tc.dropout)
    model.to(device)
    sem_params, ac_params = split_parameters(model, mcfg.freeze_frontend)

    train_set = PretrainDataset(store, train_ids, tc.crop_samples, tc.seed, random_crop=True, model_config=mcfg)
    val_set = PretrainDataset(store, val_ids, tc.crop_samples, tc.seed, random_crop=False, model_config=mcfg)
    start_step = int(ckpt["step"]) if ckpt else 0
    sampler = StepBatchSampler(len(train_set), tc.batch_size, world, rank, tc.grad_accum, tc.seed,
                               start_step=start_step, max_steps=tc.max_steps)
    if ckpt and ckpt["sampler"]["steps_per_epoch"] != sampler.steps_per_epoch:
        raise CheckpointError(f"{last_path}: the training split changed ({ckpt['sampler']['steps_per_epoch']} "
                              f"steps per epoch then, {sampler.steps_per_epoch} now): the target cache differs")
    loader_kw = dict(collate_fn=collate, num_workers=tc.num_workers, pin_memory=device_type == "cuda",
                     # an explicit generator: creating the iterator must not draw from the global RNG
                     generator=torch.Generator().manual_seed(tc.seed))
    train_loader = DataLoader(train_set, batch_sampler=sampler, **loader_kw)
    eval_bs = tc.eval_batch_size or micro_bs
    val_batches = val_shard(len(val_set), world, rank, eval_bs)
    if tc.eval_max_batches:
        val_batches = val_batches[:tc.eval_max_batches]
    val_loader = DataLoader(val_set, batch_sampler=val_batches, **loader_kw)

    # ---- optimisers (two AdamW like the authors), scaler --------------------------------
    opt_sem = make_optimizer(sem_params, tc, device_type)
    opt_ac = make_optimizer(ac_params, tc, device_type)
    optimizers = (opt_sem, opt_ac)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    best_val = math.inf
    if ckpt:
        opt_sem.load_state_dict(ckpt["optimizer_semantic"])
        opt_ac.load_state_dict(ckpt["optimizer_acoustic"])
        scaler.load_state_dict(ckpt["scaler"])
        best_val = float(ckpt["best_val_loss"])
        set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
    raw_model = model
    if tc.compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)

    @torch.no_grad()
    def estimate_loss() -> Dict[str, float]:
        """Element-wise means over the whole validation split (all ranks' shares summed)."""
        model.eval()
        acc = torch.zeros(4, dtype=torch.float64, device=device)
        for wavs, lengths, tg in val_loader:
            with ctx:
                out = raw_model(wavs.to(device), lengths.to(device), with_heads=True)
            acc += loss_terms(out.semantic_pred, out.acoustic_pred, out.pad_mask, tg).stacked()
        total, sem, ac = objective(LossTerms.from_stacked(all_sum(acc)), tc.lambda_acoustic)
        model.train()
        return {"semantic": sem.item(), "acoustic": ac.item(), "total": total.item()}

    def save(path: Path, step: int) -> None:
        """Gathers every rank's RNG state (dropout streams differ per rank); rank 0 writes."""
        states = [None] * world
        if ddp:
            dist.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if not master:
            return
        atomic.write_torch(path, {
            "format": CKPT_FORMAT,
            "model": raw_model.state_dict(),
            "model_config": mcfg.to_dict(),
            "optimizer_semantic": opt_sem.state_dict(),
            "optimizer_acoustic": opt_ac.state_dict(),
            "scaler": scaler.state_dict(),
            "config": tc.to_dict(),
            "step": step,
            "sampler": {"epoch": sampler.epoch_of(step), "steps_per_epoch": sampler.steps_per_epoch,
                        "world_size": world},
            "best_val_loss": best_val,
            "rng": states,
        })

    # ---- logging ------------------------------------------------------------------------
    losses_path = out_dir / LOSSES_FILE
    writer = pbar = None
    if master:
        if resume:
            truncate_losses(losses_path, start_step)
        else:
            losses_path.write_text("")
        if tc.tensorboard:
            from tensorboardX import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1 if resume else None)
        if tc.progress_bar:
            from tqdm import tqdm

            pbar = tqdm(total=tc.max_steps, initial=start_step, desc="pretrain", dynamic_ncols=True)
        n_sem = sum(p.numel() for p in sem_params)
        n_ac = sum(p.numel() for p in ac_params)
        print(f"[pretrain] {'resume at step ' + str(start_step) if resume else 'new run'} | world {world} | "
              f"device {device} {dtype} | train {len(train_ids)} val {len(val_ids)} | micro-batch {micro_bs} x "
              f"accum {tc.grad_accum} x world {world} = {tc.batch_size} | trainable semantic side {n_sem:,} "
              f"acoustic side {n_ac:,}", file=sys.stderr, flush=True)
    pending: List[Tuple[int, float, torch.Tensor]] = []  # (step, lr, [sem, ac]) until the next flush

    def flush_losses() -> Optional[float]:
        """Write buffered step losses (one device sync per flush, not per step); returns the last total."""
        if not (master and pending):
            pending.clear()
            return None
        vals = torch.stack([p[2] for p in pending]).cpu().tolist()
        with open(losses_path, "a") as f:
            for (step_i, lr_i, _), (s, a) in zip(pending, vals):
                total = s + tc.lambda_acoustic * a
                f.write(json.dumps({"step": step_i, "semantic": s, "acoustic": a, "total": total, "lr": lr_i}) + "\n")
                if writer is not None and step_i % tc.log_interval == 0:
                    writer.add_scalar("train/semantic", s, step_i)
                    writer.add_scalar("train/acoustic", a, step_i)
                    writer.add_scalar("train/total", total, step_i)
                    writer.add_scalar("train/lr", lr_i, step_i)
            f.flush()
            os.fsync(f.fileno())
        pending.clear()
        return total

    # ---- loop ---------------------------------------------------------------------------
    model.train()
    batches = iter(train_loader)
    step = start_step  # completed steps
    t_last, step_last = time.time(), step
    last_val: Dict[str, float] = {}
    while step < tc.max_steps:
        lr = get_lr(step, tc)
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = lr
        micro = [next(batches) for _ in range(tc.grad_accum)]
        step_losses = train_step(model, micro, optimizers, scaler, ctx, tc, device, world, ddp)
        step += 1
        pending.append((step, lr, step_losses))

        if step % tc.log_interval == 0 or step == tc.max_steps:
            last_total = flush_losses()
            now = time.time()
            ups = tc.batch_size * (step - step_last) / max(now - t_last, 1e-9)
            t_last, step_last = now, step
            if writer is not None:
                writer.add_scalar("train/utterances_per_s", ups, step)
            if pbar is not None:
                pbar.set_postfix(loss=f"{last_total:.4f}", utt_s=f"{ups:.1f}")
        if pbar is not None:
            pbar.update(1)
        if step % tc.eval_interval == 0 or step == tc.max_steps:
            last_val = estimate_loss()
            if writer is not None:
                for k, v in last_val.items():
                    writer.add_scalar(f"val/{k}", v, step)
            if master:
                print(f"[pretrain] step {step}: val semantic {last_val['semantic']:.5f} acoustic "
                      f"{last_val['acoustic']:.5f} total {last_val['total']:.5f} (best {best_val:.5f})",
                      file=sys.stderr, flush=True)
            if last_val["total"] < best_val:
                best_val = last_val["total"]
                flush_losses()
                save(best_path, step)
        if step % tc.ckpt_interval == 0 or step == tc.max_steps:
            flush_losses()
            save(last_path, step)
    flush_losses()
    if pbar is not None:
        pbar.close()
    if writer is not None:
        writer.close()
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return {"step": step, "best_val_loss": best_val, "last_val": last_val}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        train(load_config(args.config, args.overrides), resume=args.resume)
    except ValueError as e:  # bad config, cache, checkpoint or launch environment: a sentence, not a traceback
        print(f"python -m pretrain.train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
