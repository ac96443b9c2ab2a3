"""Pre-training data: split, 5 s crops aligned with the 50 Hz targets, and a resumable sampler.

``DataLoader(dataset, batch_sampler=StepBatchSampler(...), collate_fn=collate)`` yields
``wavs (B, N), lengths (B,), targets`` where ``targets`` holds ``semantic (B, D)``,
``acoustic (B, T, F)`` and ``acoustic_mask (B, T)`` (True = a real target frame).

Why the sampler is not ``torch.utils.data.DistributedSampler``: a killed run must continue with the
very batch it would have drawn next, so every batch is a pure function of ``(seed, epoch, step)``
and the sampler can start at any step without touching the data. It keeps DistributedSampler's
layout (rank ``r`` takes positions ``r, r + world, ...`` of the global batch), so the union of the
ranks' batches is the global batch a single process would draw, and crop offsets depend only on
``(seed, epoch, utterance)``, so a rank draws the same crop a single process would.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from care_core.audio import AudioError, read_mono
from care_core.constants import SAMPLE_RATE

# Distinct streams of the data RNG, so that the split, the order and the crops never share draws.
_SPLIT_STREAM, _ORDER_STREAM, _CROP_STREAM = 0, 1, 2


class PretrainDataError(ValueError):
    """An audio file or target entry that cannot be used (names the file and the problem)."""


def split_ids(ids: Sequence[str], val_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Random train/validation split (80/20 in the paper), a pure function of the id set and the seed."""
    ids = sorted(ids)
    if len(ids) < 2:
        raise PretrainDataError(f"need at least 2 utterances to split into train and validation, got {len(ids)}")
    n_val = min(max(1, int(round(len(ids) * val_fraction))), len(ids) - 1)
    perm = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(ids))
    val = sorted(ids[i] for i in perm[:n_val])
    train = sorted(ids[i] for i in perm[n_val:])
    return train, val


def load_audio(path: str, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mono float32 waveform at ``sample_rate``: the shared decoder the target writer used too, so
    crops line up with the targets computed from the same samples."""
    try:
        wav, _, _ = read_mono(path, sample_rate)
    except AudioError as e:
        raise PretrainDataError(f"{path}: cannot read audio ({e.problem})") from None
    return wav.contiguous()


def check_target_rate(store, hop: int) -> None:
    """Refuse a target cache whose acoustic frames are not the model's frames.

    ``care-pretrain targets`` records its audio rate and acoustic frame rate in the cache's
    ``run.json``; a crop of ``k`` model frames takes ``k`` target frames, which is only the same
    stretch of audio when the cache's hop (``sample_rate / acoustic_rate_hz``) is the model's.
    """
    settings = store.settings
    where = f"{store.cache_dir}/run.json"
    missing = [k for k in ("sample_rate", "acoustic_rate_hz") if k not in settings]
    if missing:
        raise PretrainDataError(f"{where}: records no {' or '.join(missing)}, so the target frame rate is unknown; "
                                f"recompute the targets with care-pretrain targets")
    sr, rate = int(settings["sample_rate"]), float(settings["acoustic_rate_hz"])
    model_rate = SAMPLE_RATE / hop
    if sr != SAMPLE_RATE or rate * hop != SAMPLE_RATE:
        raise PretrainDataError(
            f"{where}: acoustic targets at {rate:g} Hz of {sr} Hz audio (hop {sr / rate:g} samples) do not match the "
            f"model's {model_rate:g} Hz frames of {SAMPLE_RATE} Hz audio (hop {hop}, CareConfig.downsample_rate); "
            f"recompute the targets for this model")


class PretrainDataset(Dataset):
    """One item per (utterance, epoch): a random hop-aligned crop (or zero-pad) and its targets.

    Items are addressed by ``(index, epoch)`` tuples (what ``StepBatchSampler`` yields): the crop
    offset is drawn from ``(seed, epoch, index)`` so it does not depend on which rank, worker or
    resumed process loads it. ``random_crop=False`` (validation) always takes the first
    ``crop_samples`` so validation losses are comparable between evaluations. The hop and the
    frame count come from the model config (``CareConfig``; the full-size one when not given),
    and a target cache at another frame rate is refused (``check_target_rate``).
    """

    def __init__(
        self,
        store,
        ids: Sequence[str],
        crop_samples: int,
        seed: int,
        random_crop: bool = True,
        model_config=None,
    ):
        if model_config is None:
            from care_upstream.config import CareConfig

            model_config = CareConfig.base()
        hop = int(model_config.downsample_rate)
        check_target_rate(store, hop)
        if crop_samples % hop:
            raise PretrainDataError(f"crop of {crop_samples} samples is not a multiple of the model's hop {hop}")
        self.store, self.ids = store, list(ids)
        self.crop_samples, self.hop, self.seed, self.random_crop = crop_samples, hop, seed, random_crop
        self.frame_count: Callable[[int], int] = model_config.num_frames
        self.crop_frames = self.frame_count(crop_samples)
        if self.crop_frames < 1:
            raise PretrainDataError(f"a crop of {crop_samples} samples gives no model frame")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key) -> Dict[str, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        utt = self.ids[index]
        path = self.store.path(utt)
        wav = load_audio(path)
        tgt = self.store.get(utt)
        acoustic = torch.from_numpy(np.ascontiguousarray(tgt["acoustic"]))
        semantic = torch.from_numpy(np.ascontiguousarray(tgt["semantic"]))
        n = wav.shape[0]
        if acoustic.ndim != 2 or acoustic.shape[0] != self.frame_count(n):
            raise PretrainDataError(
                f"{path}: {n} samples give {self.frame_count(n)} frames but the stored acoustic target "
                f"of {utt!r} has shape {tuple(acoustic.shape)} (stale cache or different resampling?)")
        # Crop on the target grid: offset = k hops, so model frame t of the crop is stored frame k + t.
        max_hops = max(n - self.crop_samples, 0) // self.hop
        if self.random_crop and max_hops > 0:
            k = int(np.random.default_rng([self.seed, _CROP_STREAM, epoch, index]).integers(0, max_hops + 1))
        else:
            k = 0
        start = k * self.hop
        piece = wav[start:start + self.crop_samples]
        length = piece.shape[0]
        frames = min(self.frame_count(length), acoustic.shape[0] - k, self.crop_frames)
        out_wav = torch.zeros(self.crop_samples, dtype=torch.float32)
        out_wav[:length] = piece
        out_ac = torch.zeros(self.crop_frames, acoustic.shape[1], dtype=torch.float32)
        out_ac[:frames] = acoustic[k:k + frames]
        mask = torch.zeros(self.crop_frames, dtype=torch.bool)
        mask[:frames] = True
        return {"wav": out_wav, "length": torch.tensor(length), "semantic": semantic,
                "acoustic": out_ac, "acoustic_mask": mask}


def collate(items: List[Dict[str, torch.Tensor]]):
    """``wavs (B, N), lengths (B,), targets dict`` (all items are already crop-sized)."""
    wavs = torch.stack([it["wav"] for it in items])
    lengths = torch.stack([it["length"] for it in items]).long()
    targets = {k: torch.stack([it[k] for it in items]) for k in ("semantic", "acoustic", "acoustic_mask")}
    return wavs, lengths, targets


class StepBatchSampler(Sampler):
    """Yields this rank's micro-batches of ``(index, epoch)`` for steps ``start_step, ...``.

    Step ``s`` (0-based) of a run uses global batch ``perm_e[p*B:(p+1)*B]`` with
    ``e, p = divmod(s, steps_per_epoch)`` and ``perm_e`` a permutation drawn from ``(seed, e)``
    (incomplete tail batches are dropped, as the authors' ``drop_last=True``). Rank ``r`` takes
    every ``world``-th element from ``r``; its share is then cut into ``grad_accum`` micro-batches.
    """

    def __init__(self, num_items: int, global_batch: int, world_size: int, rank: int, grad_accum: int,
                 seed: int, start_step: int = 0, max_steps: Optional[int] = None):
        if global_batch % (world_size * grad_accum):
            raise PretrainDataError(
                f"global batch {global_batch} is not divisible by world size {world_size} x grad_accum {grad_accum}")
        if num_items < global_batch:
            raise PretrainDataError(
                f"the training split has {num_items} utterances, fewer than one global batch of {global_batch}")
        self.n, self.B, self.world, self.rank = num_items, global_batch, world_size, rank
        self.accum, self.seed, self.start_step, self.max_steps = grad_accum, seed, start_step, max_steps
        self.steps_per_epoch = num_items // global_batch
        self._perm_cache: Tuple[int, Optional[np.ndarray]] = (-1, None)

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _perm(self, epoch: int) -> np.ndarray:
        if self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(self.n))
        return self._perm_cache[1]

    def rank_batch(self, step: int) -> List[Tuple[int, int]]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        glob = self._perm(epoch)[pos * self.B:(pos + 1) * self.B]
        return [(int(i), epoch) for i in glob[self.rank::self.world]]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        step = self.start_step
        while self.max_steps is None or step < self.max_steps:
            mine = self.rank_batch(step)
            micro = len(mine) // self.accum
            for j in range(self.accum):
                yield mine[j * micro:(j + 1) * micro]
            step += 1

    def __len__(self) -> int:
        if self.max_steps is None:
            raise TypeError("StepBatchSampler without max_steps is endless")
        return max(self.max_steps - self.start_step, 0) * self.accum


def val_shard(num_items: int, world_size: int, rank: int, batch_size: int) -> List[List[Tuple[int, int]]]:
    """This rank's validation batches: every item exactly once over all ranks (no padding)."""
    mine = list(range(rank, num_items, world_size))
    return [[(i, 0) for i in mine[j:j + batch_size]] for j in range(0, len(mine), batch_size)]
