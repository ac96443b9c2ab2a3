"""The layer-wise ridge diagnostic (pretrain.diagnose) and the learning signal it watches.

The last test is the guard of issue "does pre-training transfer": a few dozen steps of the tiny
model on planted acoustic targets (a function of the audio frame they belong to) must raise the
held-out R² of the acoustic branch's states to those targets. It fails if the acoustic loss stops
reaching the acoustic layers, or if crops and targets fall out of alignment.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.diagnose import (
    DiagnoseConfig,
    curves,
    load_model,
    parse_models,
    ridge_r2,
    run,
    save_initial_model,
)
from pretrain.targets.frames import care_frame_count
from pretrain.targets.store import TargetStore
from test_train import write_cache

SR = 16000
HOP = 320
SEM_DIM = 4
AC_DIM = 3


def planted_targets(wav: np.ndarray) -> np.ndarray:
    """Per 50 Hz frame: log energy of the frame's 400 samples, and two fixed transforms of it.

    A pure function of the frame's own samples, so a model can learn it only if the target it is
    shown for frame t is the one computed from frame t.
    """
    frames = care_frame_count(len(wav))
    e = np.array([np.log(np.mean(wav[t * HOP:t * HOP + 400] ** 2) + 1e-6) for t in range(frames)])
    e = (e - e.mean()) / (e.std() + 1.0)
    return np.stack([e, -e, np.tanh(2 * e)], axis=1).astype(np.float32)


def make_planted_cache(root: Path, n_utts: int = 40, seed: int = 0) -> Path:
    """Noise bursts with a random loudness envelope; acoustic targets follow the envelope."""
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n_utts):
        n = int(rng.uniform(0.5, 0.8) * SR)
        knots = np.exp(rng.normal(0, 1.2, size=12))
        env = np.interp(np.arange(n), np.linspace(0, n, 12), knots)
        wav = (0.02 * env * rng.standard_normal(n)).clip(-0.99, 0.99).astype(np.float32)
        sem = np.full(SEM_DIM, 0.5, dtype=np.float32)  # learnable at once: it leaves the common encoder be
        utts.append((f"u{i:03d}", wav, f"t{i}", sem, planted_targets(wav)))
    return write_cache(root, utts, SR // HOP)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return make_planted_cache(tmp_path_factory.mktemp("planted"))


# ---------------------------------------------------------------------------- ridge
def test_ridge_r2_recovers_a_planted_linear_signal():
    """y = xW + noise with noise variance 1/4 of the signal's: held-out R² ≈ 0.8."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 10))
    w = rng.standard_normal((10, 3))
    signal = x @ w
    noise = rng.standard_normal(signal.shape) * np.sqrt(signal.var(0) / 4)
    train, test = np.arange(1500), np.arange(1500, 2000)
    r2, alpha = ridge_r2(x, signal + noise, train, test, DiagnoseConfig().alphas)
    assert abs(r2 - 0.8) < 0.03, r2
    r2_clean, _ = ridge_r2(x, signal, train, test, DiagnoseConfig().alphas)
    assert r2_clean > 0.999
    r2_none, _ = ridge_r2(x, rng.standard_normal((2000, 3)), train, test, DiagnoseConfig().alphas)
    assert -0.05 < r2_none < 0.02


def test_ridge_r2_drops_constant_targets_and_is_nan_when_nothing_varies():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 4))
    y = np.stack([x[:, 0], np.zeros(200)], axis=1)  # the zero column (a normalised mean) is ignored
    r2, _ = ridge_r2(x, y, np.arange(150), np.arange(150, 200), (1e-3,))
    assert r2 > 0.999
    r2_const, _ = ridge_r2(x, np.zeros((200, 2)), np.arange(150), np.arange(150, 200), (1e-3,))
    assert np.isnan(r2_const)


# ---------------------------------------------------------------------------- diagnostic on a model
def _tiny(seed: int = 0):
    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    torch.manual_seed(seed)
    return CARE(CareConfig.tiny(text="minilm", semantic_target_dim=SEM_DIM, acoustic_target_dim=AC_DIM)).eval()


def test_diagnostic_reports_every_layer_branch_and_target_and_writes_its_files(planted, tmp_path):
    folder = _tiny().save_pretrained(tmp_path / "tiny")
    cfg = DiagnoseConfig(max_utterances=30, max_frames=2000)
    results = run({"init": str(folder)}, str(planted), str(tmp_path / "out"), cfg)
    scores = results["init"]
    keys = {(s.layer, s.branch, s.target) for s in scores}
    assert len(keys) == (7 + 6 + 6) * 3
    layers, r2 = curves(scores, "acoustic_frames", "acoustic")
    assert layers == list(range(13)) and all(np.isfinite(r2))
    # random states already carry the frame energy the targets are made of (a linear read-out)
    assert max(r2) > 0.3
    saved = json.loads((tmp_path / "out" / "diagnose.json").read_text())
    assert len(saved["scores"]["init"]) == len(scores)
    assert (tmp_path / "out" / "diagnose.md").read_text().startswith("| layer | branch |")
    assert (tmp_path / "out" / "diagnose.png").read_bytes()[:4] == b"\x89PNG"


def test_model_labels_and_bad_inputs_are_named(tmp_path):
    from pretrain.cli import main

    assert parse_models(["init=a/b", "c/trained"]) == {"init": "a/b", "trained": "c/trained"}
    code = main(["diagnose", "--targets", str(tmp_path / "nope"), "--model", str(tmp_path)])
    assert code == 2


# ---------------------------------------------------------------------------- the learning guard
def _learn_acoustic(store, tc, steps: int, shift: int = 0):
    """``steps`` trainer steps (``pretrain.train.train_step``: the model's routing, the objective) on
    random hop-aligned crops (``pretrain.data``), stepping only the acoustic side's optimiser so that
    the common encoder under it stands still. ``shift`` > 0 pairs frame t with target t + shift (a
    planted misalignment). Returns (initial model, trained model)."""
    import copy
    from contextlib import nullcontext

    from pretrain.data import PretrainDataset, collate, split_ids
    from pretrain.train import build_model, make_optimizer, split_parameters, train_step

    torch.manual_seed(tc.seed)
    model = build_model(tc, store.semantic_dim, store.acoustic_dim)
    init = copy.deepcopy(model).eval()
    _, ac_params = split_parameters(model, model.config.freeze_frontend)
    opt = make_optimizer(ac_params, tc, "cpu")
    train_ids, _ = split_ids(store.ids, 0.25, tc.seed)
    data = PretrainDataset(store, [u for u in store.ids if u in set(train_ids)], tc.crop_samples, tc.seed,
                           random_crop=True, model_config=model.config)
    rng = np.random.default_rng(tc.seed)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.train()
    for step in range(steps):
        wavs, lengths, tg = collate([data[(int(i), step)] for i in rng.choice(len(data), tc.batch_size)])
        if shift:
            tg["acoustic"] = torch.roll(tg["acoustic"], -shift, dims=1)
        train_step(model, [(wavs, lengths, tg)], [opt], scaler, nullcontext(), tc, "cpu")
    return init, model.eval()


def _head_r2(model, store, ids) -> float:
    """Held-out R² of the model's own acoustic predictions (its head) over every frame of ``ids``."""
    from pretrain.data import load_audio

    errs, tgts = [], []
    with torch.no_grad():
        for u in ids:
            out = model(load_audio(store.path(u), SR)[None], with_heads=True)
            y = torch.from_numpy(store.get(u)["acoustic"])
            t = min(len(y), out.acoustic_pred.shape[1])
            errs.append(((out.acoustic_pred[0, :t] - y[:t]) ** 2).sum())
            tgts.append(y[:t])
    y = torch.cat(tgts)
    return 1.0 - float(sum(errs) / ((y - y.mean(0)) ** 2).sum())


def _guard_config(planted: Path, tmp_path: Path):
    from pretrain.config import load_config

    return load_config(None, [f"target_cache={planted}", f"out_dir={tmp_path}", "init_from=scratch",
                              "model_size=tiny", "crop_seconds=0.4", "batch_size=8", "lr=3e-3", "seed=0"])


def test_acoustic_branch_learns_its_aligned_targets(planted, tmp_path):
    """30 steps: the acoustic head's R² on held-out utterances goes from below 0 to above 0.3
    (measured -0.39 -> 0.46; the misaligned control stays at 0.00).

    Fails if the acoustic loss stops reaching the acoustic layers (routing) or crops and targets drift
    apart (alignment): the same run with targets shifted by 3 frames is the control that shows it.
    """
    from pretrain.data import split_ids

    store = TargetStore(planted)
    torch.set_num_threads(1)
    tc = _guard_config(planted, tmp_path)
    _, held_out = split_ids(store.ids, 0.25, tc.seed)
    init, trained = _learn_acoustic(store, tc, steps=30)
    _, misaligned = _learn_acoustic(store, tc, steps=30, shift=3)
    before, after, control = (_head_r2(m, store, held_out) for m in (init, trained, misaligned))
    assert before < 0 and after > 0.3 and control < after - 0.15, (before, after, control)


def test_saved_initial_model_is_the_runs_step_0(planted, tmp_path):
    """`save_initial_model` (the transfer demo's baseline) equals what `pretrain.train` starts from:
    the parameters a run never trains are bit-identical to the run's checkpoint."""
    from pretrain.config import load_config
    from pretrain.train import train

    tc = load_config(None, [f"target_cache={planted}", f"out_dir={tmp_path / 'run'}", "init_from=scratch",
                            "model_size=tiny", "crop_seconds=0.4", "batch_size=8", "max_steps=2", "eval_interval=2",
                            "ckpt_interval=2", "tensorboard=false", "progress_bar=false", "device=cpu", "seed=5",
                            "torch_threads=1"])
    init = save_initial_model(tc, tmp_path / "init")
    train(tc)
    trained = load_model(str(tmp_path / "run" / "ckpt_last.pt"))
    frozen = {k: v for k, v in trained.state_dict().items() if k.startswith(("frontend.", "semantic.layers."))}
    assert frozen and all(torch.equal(v, init.state_dict()[k]) for k, v in frozen.items())
    trainable = [k for k in init.state_dict() if k.startswith("acoustic.")]
    assert any(not torch.equal(init.state_dict()[k], trained.state_dict()[k]) for k in trainable)
    assert load_model(str(tmp_path / "init")).config == init.config


def test_demo_configs_route_the_acoustic_loss_into_the_common_encoder_and_base_keeps_the_paper():
    """The fix of issue 14's missing transfer lives in the small configs; care_base stays the recipe."""
    from pretrain.config import load_config

    root = Path(__file__).resolve().parents[1] / "pretrain" / "configs"
    base = load_config(str(root / "care_base.yaml"))
    assert (base.init_from, base.freeze_frontend, base.lr, base.acoustic_grad_to_common) == \
        ("teachers", True, 1e-5, False)
    for name in ("care_tiny_demo.yaml",):
        small = load_config(str(root / name))
        assert small.init_from == "scratch" and small.acoustic_grad_to_common, name
