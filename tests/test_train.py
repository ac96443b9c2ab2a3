"""Trainer behaviour: loss maths, gradient routing, data alignment, kill + resume, and the
trainer against an independent reference (one process, gradient accumulation; the multi-process
launches are in test_multinode.py).

Everything runs on CPU with ``CareConfig.tiny`` models and a synthetic target cache written with
the target writer's own functions (``pretrain.targets.store``), so the trainer reads exactly the
format ``care-pretrain targets`` produces.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from care_core import atomic
from care_core.constants import SAMPLE_RATE
from pretrain.config import ConfigError, load_config
from pretrain.data import PretrainDataError, PretrainDataset, StepBatchSampler, check_target_rate, collate, split_ids
from pretrain.targets.frames import care_frame_count, care_hop
from pretrain.targets.store import (
    RUN_FILE,
    ChunkRecord,
    ShardItem,
    TargetStore,
    WorkerIndex,
    merge_index,
    worker_tag,
    write_shard,
)
from pretrain.train import (
    CKPT_BEST,
    CKPT_LAST,
    LOSSES_FILE,
    loss_terms,
    objective,
    set_dropout,
    split_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
SEM_DIM, AC_DIM = 6, 5
REF_STEPS = 12
"""Length of the dropout reference run: the killed run is stopped after step 3 is logged, and the
margin up to 12 absorbs a test process that a busy machine schedules late."""


def write_cache(root: Path, utts, acoustic_rate_hz: float = SAMPLE_RATE // care_hop()) -> Path:
    """``root/audio`` (one wav per utterance) + a merged one-worker target cache in ``root/cache``.

    ``utts`` holds ``(id, wav, text, semantic (D,), acoustic (T50, F))`` per utterance; the cache is
    written with the target writer's own functions, and ``run.json`` records the rates as
    ``care-pretrain targets`` does (``acoustic_rate_hz`` other than 50 makes a mismatched cache).
    """
    import soundfile as sf

    audio, cache = root / "audio", root / "cache"
    audio.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    tag = worker_tag(0, 1)
    atomic.write_json(cache / RUN_FILE, {"world_size": 1, "semantic_dim": len(utts[0][3]),
                                         "acoustic_dim": utts[0][4].shape[1],
                                         "sample_rate": SAMPLE_RATE, "acoustic_rate_hz": acoustic_rate_hz})
    items = []
    for utt_id, wav, text, _, _ in utts:
        path = audio / f"{utt_id}.wav"
        sf.write(path, wav, SAMPLE_RATE, subtype="FLOAT")
        items.append(ShardItem(id=utt_id, path=str(path), n_samples=len(wav), frames=care_frame_count(len(wav)),
                               text=text, orig_sample_rate=SAMPLE_RATE, orig_channels=1))
    shard, sha256 = write_shard(cache, tag, 0, items, [u[3] for u in utts], [u[4] for u in utts])
    WorkerIndex(cache, tag).append(ChunkRecord(chunk=0, shard=shard, items=items, sha256=sha256))
    atomic.write_json(cache / f"done-{tag}.json", {"done": True})
    merge_index(cache)
    return cache


def make_cache(root: Path, n_utts: int = 12, seed: int = 0, min_s: float = 0.35, max_s: float = 0.9,
               acoustic_rate_hz: float = SAMPLE_RATE // care_hop()) -> Path:
    """Audio files + a merged target cache: semantic (n, 6) and acoustic (T50, 5) per utterance.

    Acoustic targets are a deterministic function of the frame index and utterance so that a
    misaligned crop gives a measurable difference.
    """
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n_utts):
        n = int(rng.uniform(min_s, max_s) * SR)
        wav = (0.1 * rng.standard_normal(n)).astype(np.float32)
        sem = rng.standard_normal(SEM_DIM).astype(np.float32)
        t = np.arange(care_frame_count(n), dtype=np.float32)[:, None]
        utts.append((f"utt{i:03d}", wav, f"text {i}", sem, (np.sin(t / 7.0 + np.arange(AC_DIM)) + i).astype(np.float32)))
    return write_cache(root, utts, acoustic_rate_hz)


def tiny_args(cache: Path, out: Path, **extra) -> list:
    base = dict(target_cache=cache, out_dir=out, init_from="scratch", model_size="tiny", tiny_text="minilm",
                crop_seconds=0.5, batch_size=4, max_steps=8, eval_interval=4, ckpt_interval=2, log_interval=1,
                lr=1e-3, tensorboard=False, progress_bar=False, device="cpu", seed=3)
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def read_losses(out: Path) -> list:
    return [json.loads(line) for line in (out / LOSSES_FILE).read_text().splitlines() if line.strip()]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_inprocess(args: list, resume: bool = False) -> dict:
    """The trainer in this process (imports already paid), on one thread like the subprocesses."""
    from pretrain.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(load_config(None, args), resume=resume)
    finally:
        torch.set_num_threads(threads)


def independent_reference(args: list) -> tuple:
    """The objective written out by hand, on one process and the whole global batch at once.

    The yardstick the trainer is held to (one process, gradient accumulation, DDP over one or two
    nodes, srun tasks): ``torch.nn.functional.mse_loss`` of the semantic vectors plus λ times
    ``mse_loss`` over the concatenated valid frames of every utterance, two plain AdamW steps.
    Nothing of the trainer's loss code is used (not ``loss_terms``, ``objective`` or
    ``train_step``), so a normalisation error there shows up as a difference here. It shares with
    the trainer the things tested elsewhere: the model, the batches and the optimiser split.
    Returns ``([(semantic, acoustic) per step], final state dict)``.
    """
    from torch.nn.functional import mse_loss

    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    tc = load_config(None, args)
    assert tc.init_from == "scratch" and tc.model_size == "tiny" and tc.grad_clip == 0 and tc.warmup_steps == 0
    store = TargetStore(tc.target_cache)
    train_ids, _ = split_ids(store.ids, tc.val_fraction, tc.seed)
    torch.manual_seed(tc.seed)  # the trainer's rank-0 seed, drawn from first by the model init
    model = CARE(CareConfig.tiny(text=tc.tiny_text, semantic_target_dim=store.semantic_dim,
                                 acoustic_target_dim=store.acoustic_dim))
    if tc.dropout >= 0:
        set_dropout(model, tc.dropout)
    sem_p, ac_p = split_parameters(model, model.config.freeze_frontend)
    opts = [torch.optim.AdamW(ps, lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps, weight_decay=tc.weight_decay)
            for ps in (sem_p, ac_p)]
    ds = PretrainDataset(store, train_ids, tc.crop_samples, tc.seed, random_crop=True, model_config=model.config)
    sampler = StepBatchSampler(len(ds), tc.batch_size, 1, 0, 1, tc.seed, max_steps=tc.max_steps)
    model.train()
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in sampler:
            wavs, lengths, tg = collate([ds[key] for key in batch])
            out = model(wavs, lengths, with_heads=True)
            sem = mse_loss(out.semantic_pred, tg["semantic"])
            valid = [min(int(tg["acoustic_mask"][i].sum()), int(out.frame_lengths[i])) for i in range(len(batch))]
            pred = torch.cat([out.acoustic_pred[i, :n] for i, n in enumerate(valid)])
            target = torch.cat([tg["acoustic"][i, :n] for i, n in enumerate(valid)])
            ac = mse_loss(pred, target)
            (sem + tc.lambda_acoustic * ac).backward()
            for o in opts:
                o.step()
                o.zero_grad()
            losses.append((float(sem.detach()), float(ac.detach())))
    finally:
        torch.set_num_threads(threads)
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_matches_reference(run: Path, reference: tuple, rtol: float = 1e-4) -> None:
    """A trainer run's step losses and final weights equal the independent reference's."""
    ref_losses, ref_state = reference
    got = read_losses(run)
    assert [l["step"] for l in got] == list(range(1, len(ref_losses) + 1))
    np.testing.assert_allclose([(l["semantic"], l["acoustic"]) for l in got], ref_losses, rtol=rtol)
    state = torch.load(run / CKPT_LAST, weights_only=True)["model"]
    assert state.keys() == ref_state.keys()
    for k, v in ref_state.items():
        if k.endswith("k_proj.bias"):
            # Softmax ignores a per-query constant, so this bias has an exactly-zero true gradient;
            # Adam divides its rounding noise by its own size and moves it by +-lr in either run.
            continue
        torch.testing.assert_close(state[k], v, rtol=rtol, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference_no_dropout(cache, tmp_path_factory) -> tuple:
    return independent_reference(tiny_args(cache, tmp_path_factory.mktemp("unused") / "run", dropout=0.0))


@pytest.fixture(scope="module")
def reference_run(cache, tmp_path_factory) -> Path:
    """An uninterrupted run with the tiny model's own dropout (so resume must restore RNG states)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_inprocess(tiny_args(cache, out, max_steps=REF_STEPS))
    return out


@pytest.fixture(scope="module")
def reference_run_no_dropout(cache, tmp_path_factory) -> Path:
    """Dropout off: a step is then a function of the global batch alone, whatever the world size."""
    out = tmp_path_factory.mktemp("ref0") / "run"
    run_inprocess(tiny_args(cache, out, dropout=0.0))
    return out


# ------------------------------------------------------------------------------------------
# loss maths
# ------------------------------------------------------------------------------------------
def test_padded_batch_loss_is_weighted_combination_of_single_utterances():
    torch.manual_seed(0)
    b, t, f, d = 3, 10, 4, 5
    valid = torch.tensor([10, 6, 3])
    pad_mask = torch.arange(t)[None] >= valid[:, None]
    pred_ac, pred_sem = torch.randn(b, t, f), torch.randn(b, d)
    y_ac, y_sem = torch.randn(b, t + 2, f), torch.randn(b, d)  # targets may hold more frames than T
    tmask = torch.ones(b, t + 2, dtype=torch.bool)
    garbage = pred_ac.clone()
    garbage[pad_mask] = 1e6  # whatever the model puts on padding must not count
    terms = loss_terms(pred_sem, garbage, pad_mask, {"semantic": y_sem, "acoustic": y_ac, "acoustic_mask": tmask})
    _, sem, ac = objective(terms, 1.0)

    singles = []
    for i in range(b):
        n = int(valid[i])
        ti = loss_terms(pred_sem[i:i + 1], pred_ac[i:i + 1, :n], torch.zeros(1, n, dtype=torch.bool),
                        {"semantic": y_sem[i:i + 1], "acoustic": y_ac[i:i + 1], "acoustic_mask": tmask[i:i + 1]})
        singles.append(ti)
        # the single-utterance loss is the plain MSE over its own frames
        _, _, ac_i = objective(ti, 1.0)
        torch.testing.assert_close(ac_i, torch.nn.functional.mse_loss(pred_ac[i, :n], y_ac[i, :n]))
    weights = valid.double() * f / (valid.sum() * f)
    expected_ac = sum(w * objective(s, 1.0)[2].double() for w, s in zip(weights, singles))
    torch.testing.assert_close(ac.double(), expected_ac)
    torch.testing.assert_close(sem, torch.nn.functional.mse_loss(pred_sem, y_sem))
    total, _, _ = objective(terms, 0.5)
    torch.testing.assert_close(total, sem + 0.5 * ac)


def test_padded_model_batch_gives_single_utterance_losses(cache):
    """End to end through the real tiny model: per-utterance losses in a padded batch = alone."""
    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    store = TargetStore(cache)
    torch.manual_seed(0)
    model = CARE(CareConfig.tiny(text="minilm", semantic_target_dim=SEM_DIM, acoustic_target_dim=AC_DIM)).eval()
    ds = PretrainDataset(store, store.ids[:3], crop_samples=16000, seed=0, random_crop=False,
                         model_config=model.config)
    wavs, lengths, tg = collate([ds[i] for i in range(3)])
    assert len(set(lengths.tolist())) == 3  # genuinely padded
    with torch.no_grad():
        out = model(wavs, lengths, with_heads=True)
        batch = loss_terms(out.semantic_pred, out.acoustic_pred, out.pad_mask, tg)
        singles = []
        for i in range(3):
            n = int(lengths[i])
            o = model(wavs[i:i + 1, :n], lengths[i:i + 1], with_heads=True)
            singles.append(loss_terms(o.semantic_pred, o.acoustic_pred, o.pad_mask,
                                      {k: v[i:i + 1] for k, v in tg.items()}))
    # the data-side mask counts exactly the model's valid frames
    assert int(batch.ac_count) == int(tg["acoustic_mask"].sum()) * AC_DIM == int((~out.pad_mask).sum()) * AC_DIM
    torch.testing.assert_close(batch.ac_sse, sum(s.ac_sse for s in singles), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.sem_sse, sum(s.sem_sse for s in singles), rtol=1e-4, atol=1e-5)
    assert batch.ac_count == sum(s.ac_count for s in singles)


# ------------------------------------------------------------------------------------------
# gradient routing and the two optimisers
# ------------------------------------------------------------------------------------------
def _routing_setup():
    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    torch.manual_seed(1)
    model = CARE(CareConfig.tiny(text="minilm", semantic_target_dim=SEM_DIM, acoustic_target_dim=AC_DIM))
    sem, ac = split_parameters(model, model.config.freeze_frontend)
    wavs = 0.1 * torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    n = model.config.num_frames(8000)
    tg = {"semantic": torch.randn(2, SEM_DIM), "acoustic": torch.randn(2, n, AC_DIM),
          "acoustic_mask": torch.ones(2, n, dtype=torch.bool)}
    return model, sem, ac, wavs, lengths, tg


def _grads(params):
    return [None if p.grad is None else p.grad.clone() for p in params]


def test_two_optimisers_partition_trainable_parameters():
    model, sem, ac, *_ = _routing_setup()
    names = {id(p): n for n, p in model.named_parameters()}
    sem_names, ac_names = {names[id(p)] for p in sem}, {names[id(p)] for p in ac}
    assert not sem_names & ac_names
    assert any(n.startswith("common.") for n in sem_names) and any(n.startswith("semantic.down.") for n in sem_names)
    assert any(n.startswith("semantic.head_proj.") for n in sem_names)  # minilm width != hidden
    assert any(n.startswith("acoustic.") for n in ac_names) and any(n.startswith("acoustic_head.") for n in ac_names)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == set(names.values()) - sem_names - ac_names
    assert all(n.startswith(("frontend.", "semantic.layers.")) for n in frozen)
    assert any(n.startswith("frontend.") for n in frozen) and any(n.startswith("semantic.layers.") for n in frozen)


def test_acoustic_loss_alone_leaves_common_encoder_without_gradient():
    model, sem, ac, wavs, lengths, tg = _routing_setup()
    out = model(wavs, lengths, with_heads=True)
    t = loss_terms(out.semantic_pred, out.acoustic_pred, out.pad_mask, tg)
    objective(t, 1.0)[2].backward()
    common = [p for n, p in model.named_parameters() if n.startswith("common.")]
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in common)
    assert all(p.grad is None for p in model.semantic.parameters())
    assert sum(float(p.grad.abs().sum()) for p in ac if p.grad is not None) > 0
    assert all(p.grad is not None for p in ac)


def test_semantic_loss_alone_moves_common_and_adapters_not_acoustic():
    model, sem, ac, wavs, lengths, tg = _routing_setup()
    out = model(wavs, lengths, with_heads=True)
    t = loss_terms(out.semantic_pred, out.acoustic_pred, out.pad_mask, tg)
    objective(t, 1.0)[1].backward()
    assert all(p.grad is None for p in ac)
    for prefix in ("common.", "semantic.down.", "semantic.up."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0, prefix


def test_optimizer_steps_keep_frozen_parts_bit_identical():
    from pretrain.config import TrainConfig
    from pretrain.train import make_optimizer

    model, sem, ac, wavs, lengths, tg = _routing_setup()
    tc = TrainConfig(lr=1e-2)
    opts = [make_optimizer(sem, tc, "cpu"), make_optimizer(ac, tc, "cpu")]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        out = model(wavs, lengths, with_heads=True)
        t = loss_terms(out.semantic_pred, out.acoustic_pred, out.pad_mask, tg)
        objective(t, 1.0)[0].backward()
        for o in opts:
            o.step()
            o.zero_grad()
    for n, p in model.named_parameters():
        if n.startswith(("frontend.", "semantic.layers.")):
            assert torch.equal(p, before[n]), n
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"common", "acoustic", "acoustic_head", "semantic"} <= moved
    assert model.semantic.layers.training is False  # frozen text layers stay in eval()


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def test_split_is_seeded_disjoint_and_80_20():
    ids = [f"u{i}" for i in range(50)]
    tr, va = split_ids(ids, 0.2, seed=1)
    assert len(va) == 10 and len(tr) == 40 and not set(tr) & set(va) and set(tr) | set(va) == set(ids)
    assert split_ids(list(reversed(ids)), 0.2, seed=1) == (tr, va)
    assert split_ids(ids, 0.2, seed=2) != (tr, va)


def test_crop_keeps_audio_and_acoustic_targets_aligned(cache):
    store = TargetStore(cache)
    long_id = max(store.ids, key=store.num_samples)
    ds = PretrainDataset(store, [long_id], crop_samples=3200, seed=0)
    from pretrain.data import load_audio

    full = load_audio(store.path(long_id), SR)
    full_ac = torch.from_numpy(store.get(long_id)["acoustic"])
    offsets = set()
    for epoch in range(12):
        item = ds[(0, epoch)]
        # find the crop offset from the audio, check it is on the hop grid and targets follow it
        start = next(s for s in range(0, full.shape[0] - 3200 + 1, 320) if torch.equal(full[s:s + 3200], item["wav"]))
        k = start // 320
        offsets.add(k)
        nf = care_frame_count(3200)
        assert item["acoustic"].shape == (nf, AC_DIM) and item["acoustic_mask"].all()
        torch.testing.assert_close(item["acoustic"], full_ac[k:k + nf])
        assert ds[(0, epoch)]["wav"].equal(item["wav"])  # a pure function of (seed, epoch, index)
    assert len(offsets) > 1


def test_short_utterance_is_zero_padded_with_mask(cache):
    store = TargetStore(cache)
    short_id = min(store.ids, key=store.num_samples)
    n = store.num_samples(short_id)
    ds = PretrainDataset(store, [short_id], crop_samples=32000, seed=0)
    item = ds[(0, 0)]
    assert int(item["length"]) == n and torch.count_nonzero(item["wav"][n:]) == 0
    assert int(item["acoustic_mask"].sum()) == care_frame_count(n)
    assert torch.count_nonzero(item["acoustic"][care_frame_count(n):]) == 0


def test_hop_comes_from_the_model_config_and_a_cache_at_another_rate_is_refused(cache, tmp_path, capsys):
    from care_upstream.config import CareConfig
    from pretrain.train import main

    store = TargetStore(cache)
    assert PretrainDataset(store, store.ids, 3200, seed=0).hop == CareConfig.base().downsample_rate == 320
    # a model whose last conv does not stride has 160-sample frames: the 50 Hz cache is refused for it,
    # a 100 Hz one accepted
    cfg160 = CareConfig.tiny(text="minilm")
    cfg160.wavlm["conv_stride"] = [5, 2, 2, 2, 2, 2, 1]
    assert cfg160.downsample_rate == 160
    with pytest.raises(PretrainDataError, match=r"run.json: acoustic targets at 50 Hz .* model's 100 Hz frames .*hop 160"):
        PretrainDataset(store, store.ids, 3200, seed=0, model_config=cfg160)
    check_target_rate(TargetStore(make_cache(tmp_path / "c100", n_utts=2, acoustic_rate_hz=100)), 160)

    wrong = TargetStore(make_cache(tmp_path / "c100b", n_utts=2, acoustic_rate_hz=100))
    with pytest.raises(PretrainDataError, match="run.json: acoustic targets at 100 Hz"):
        check_target_rate(wrong, 320)
    # the trainer refuses it in one sentence, no traceback
    assert main(tiny_args(wrong.cache_dir, tmp_path / "run", batch_size=1)) == 2
    err = capsys.readouterr().err
    assert "c100b/cache/run.json: acoustic targets at 100 Hz" in err and "Traceback" not in err
    # a cache that does not say its rate is refused too
    run_json = wrong.cache_dir / "index.json"
    index = json.loads(run_json.read_text())
    del index["settings"]["acoustic_rate_hz"]
    run_json.write_text(json.dumps(index))
    with pytest.raises(PretrainDataError, match="records no acoustic_rate_hz"):
        PretrainDataset(TargetStore(wrong.cache_dir), ["utt000"], 3200, seed=0)


def test_sampler_ranks_union_is_the_single_process_batch_and_restarts_mid_stream():
    one = StepBatchSampler(20, 8, world_size=1, rank=0, grad_accum=1, seed=5, max_steps=6)
    r0 = StepBatchSampler(20, 8, world_size=2, rank=0, grad_accum=2, seed=5, max_steps=6)
    r1 = StepBatchSampler(20, 8, world_size=2, rank=1, grad_accum=2, seed=5, max_steps=6)
    b1, b0, bb = list(one), list(r0), list(r1)
    assert len(b1) == 6 and len(b0) == 12
    for s in range(6):
        assert sorted(b1[s]) == sorted(b0[2 * s] + b0[2 * s + 1] + bb[2 * s] + bb[2 * s + 1])
    assert {e for batch in b1 for _, e in batch} == {0, 1, 2}  # 2 steps per epoch, 3 epochs
    assert list(StepBatchSampler(20, 8, 1, 0, 1, seed=5, start_step=3, max_steps=6)) == b1[3:]


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_sise: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*batch_sise"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(None, ["max_steps=many"])
    with pytest.raises(ConfigError, match="target_hop.*removed.*downsample_rate"):
        load_config(None, ["target_hop=320"])
    with pytest.raises(ConfigError, match="whole multiple of the model's frame hop of 320"):
        load_config(None, ["crop_seconds=0.01"]).check_crop(320)
    cfg = load_config(str(ROOT / "pretrain/configs/care_base.yaml"))
    assert (cfg.batch_size, cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (128, 1e-5, 0.9, 0.99, 1e-6, 0.0)
    assert (cfg.max_steps, cfg.eval_interval, cfg.lambda_acoustic, cfg.crop_seconds, cfg.grad_clip) == (
        200_000, 5000, 1.0, 5.0, 0.0)


# ------------------------------------------------------------------------------------------
# whole runs (subprocesses)
# ------------------------------------------------------------------------------------------
def test_run_writes_losses_checkpoints_and_keeps_best(reference_run):
    losses = read_losses(reference_run)
    assert [l["step"] for l in losses] == list(range(1, REF_STEPS + 1))
    assert all(np.isfinite(l["total"]) and l["total"] > 0 for l in losses)
    assert losses[-1]["total"] < losses[0]["total"]  # lr 1e-3 on 8 steps does learn something
    last = torch.load(reference_run / CKPT_LAST, weights_only=True)
    best = torch.load(reference_run / CKPT_BEST, weights_only=True)
    assert last["step"] == REF_STEPS and best["step"] in (4, 8, 12)
    assert set(last) >= {"model", "optimizer_semantic", "optimizer_acoustic", "scaler", "config", "step", "rng",
                         "sampler", "best_val_loss", "model_config"}
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in last["model"])


def test_one_process_matches_the_independent_reference(reference_run_no_dropout, reference_no_dropout):
    assert_matches_reference(reference_run_no_dropout, reference_no_dropout)


def test_sigkill_then_resume_continues_the_exact_loss_curve(cache, reference_run, tmp_path):
    """A real SIGKILL mid-run; ``--resume`` must reproduce the uninterrupted run's losses exactly."""
    out = tmp_path / "killed"
    # Endless run (max_steps is a resumable key), killed once step 3 is logged (checkpoints every 2).
    args = tiny_args(cache, out, max_steps=10_000)
    cmd = [sys.executable, "-m", "pretrain.train", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"trainer exited early: {proc.stderr.read().decode()[-3000:]}")
            if (out / LOSSES_FILE).exists() and len(read_losses(out)) >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("trainer made no progress")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = torch.load(out / CKPT_LAST, weights_only=True)["step"]
    assert 2 <= killed_at < REF_STEPS, f"killed at step {killed_at}: not mid-run"
    run_inprocess(tiny_args(cache, out, max_steps=REF_STEPS), resume=True)
    ref = read_losses(reference_run)
    got = read_losses(out)
    assert [l["step"] for l in got] == [l["step"] for l in ref]
    assert [(l["semantic"], l["acoustic"]) for l in got] == [(l["semantic"], l["acoustic"]) for l in ref]
    a = torch.load(reference_run / CKPT_LAST, weights_only=True)
    b = torch.load(out / CKPT_LAST, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_refuses_a_changed_objective(cache, reference_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    from pretrain.train import train

    with pytest.raises(ConfigError, match="lambda_acoustic"):
        train(load_config(None, tiny_args(cache, out, lambda_acoustic=0.5)), resume=True)
    with pytest.raises(ValueError, match="pass --resume"):
        train(load_config(None, tiny_args(cache, out)), resume=False)


def test_grad_accumulation_matches_the_independent_reference(cache, reference_no_dropout, tmp_path):
    """Micro-batches hold different amounts of padding: the global counts keep the objective."""
    out = tmp_path / "accum"
    run_inprocess(tiny_args(cache, out, dropout=0.0, grad_accum=2))
    assert_matches_reference(out, reference_no_dropout)


def test_cpu_bf16_autocast_and_clipping_run(cache, tmp_path):
    out = tmp_path / "bf16"
    result = run_inprocess(tiny_args(cache, out, dtype="bfloat16", grad_clip=0.5, max_steps=2, eval_interval=2))
    assert result["step"] == 2 and np.isfinite(result["best_val_loss"])
    assert all(np.isfinite(l["total"]) for l in read_losses(out))
    with pytest.raises(ConfigError, match="float16 needs CUDA"):
        run_inprocess(tiny_args(cache, tmp_path / "fp16", dtype="float16"))


def test_teacher_init_loads_teacher_layers_and_sizes_heads_for_the_cache(tmp_path):
    """``init_from: teachers`` with local HF folders (the hub path is the same call with a name)."""
    from transformers import BertModel, WavLMModel

    from care_upstream.config import CareConfig
    from pretrain.config import TrainConfig
    from pretrain.train import build_model

    tiny = CareConfig.tiny(text="minilm")
    torch.manual_seed(0)
    wavlm = WavLMModel(tiny.wavlm_config())
    text = BertModel(tiny.text_config())
    wavlm.save_pretrained(tmp_path / "wavlm")
    text.save_pretrained(tmp_path / "text")
    tc = TrainConfig(init_from="teachers", wavlm=str(tmp_path / "wavlm"), text=str(tmp_path / "text"))
    model = build_model(tc, semantic_dim=SEM_DIM, acoustic_dim=AC_DIM)
    assert (model.config.semantic_target_dim, model.config.acoustic_target_dim) == (SEM_DIM, AC_DIM)
    assert model.acoustic_head.out_features == AC_DIM
    torch.testing.assert_close(model.common[0].feed_forward.output_dense.weight,
                               wavlm.encoder.layers[0].feed_forward.output_dense.weight)
    torch.testing.assert_close(model.acoustic[5].feed_forward.output_dense.weight,
                               wavlm.encoder.layers[11].feed_forward.output_dense.weight)
    n_text = tiny.text["num_hidden_layers"]
    torch.testing.assert_close(model.semantic.layers[-1].output.dense.weight,
                               text.encoder.layer[n_text - 1].output.dense.weight)
    assert model.config.freeze_frontend and not model.config.acoustic_grad_to_common
