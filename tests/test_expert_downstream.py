"""The shared s3prl DownstreamExpert: probe maths, training on a prepared fixture, results files,
layer weights from checkpoints, and one end-to-end run through s3prl's runner (run_downstream.py)."""

import argparse
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from downstream_tasks import protocol
from downstream_tasks.demo_corpus import DemoConfig, write_demo_corpus
from downstream_tasks.expert import DownstreamExpert
from downstream_tasks.prepare import prepare_task
from downstream_tasks.probe import LayerWeights, ProbeHead, masked_mean

ROOT = Path(__file__).resolve().parent.parent
D = 16  # feature width of the fake upstream


class Logger:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, global_step=0):
        self.scalars[tag] = (value, global_step)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("exp_corpus")
    write_demo_corpus(base / "raw", seed=0, cfg=DemoConfig(sample_rate=16000, n_sentences=1))
    prepare_task("emotion_cafe", base / "raw", base / "manifest", progress=False, verbose=False)
    return base


def config(manifest_dir, task="emotion_cafe", **datarc):
    cfg = yaml.safe_load((ROOT / "downstream_tasks" / "emotion_cafe" / "config.yaml").read_text())
    cfg["downstream_expert"]["datarc"].update(task=task, manifest_dir=str(manifest_dir), num_workers=0,
                                              batch_size=16, **datarc)
    return cfg


def fake_features(wavs, targets, informative=True):
    """(T_i, D) per utterance, T_i from the audio length like a 320-hop upstream; the class (or
    target value) is written into the features so a working probe must learn it."""
    out = []
    for wav, t in zip(wavs, targets):
        f = 0.3 * torch.randn(max(1, len(wav) // 320), D)
        if informative:
            if np.ndim(t) == 0:
                f[:, int(t)] += 2.0
            else:
                f[:, : len(t)] += torch.as_tensor(t, dtype=torch.float32)
        out.append(f)
    return out


def run_split(expert, split, logger, step, train=False, opt=None, informative=True):
    records = defaultdict(list)
    for wavs, targets, ids in expert.get_dataloader(split):
        feats = fake_features(wavs, targets, informative)
        if train:
            loss = expert(split, feats, targets, ids, records)
            loss.backward()
            opt.step()
            opt.zero_grad()
        else:
            with torch.no_grad():
                expert(split, feats, targets, ids, records)
    return expert.log_records(split, records, logger, step)


# ------------------------------------------------------------------------------------ probe
def test_masked_mean_ignores_padding_and_validates():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    assert masked_mean(x, torch.tensor([2, 3])).squeeze(-1).tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="at least one valid frame"):
        masked_mean(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"expected \(B, T, D\)"):
        masked_mean(x[0], torch.tensor([2]))


def test_probe_padded_batch_equals_each_utterance_alone():
    torch.manual_seed(0)
    head = ProbeHead(D, 7).eval()
    feats = [torch.randn(5, D), torch.randn(12, D), torch.randn(1, D)]
    batch = head(feats)
    alone = torch.cat([head([f]) for f in feats])
    assert batch.shape == (3, 7)
    assert torch.allclose(batch, alone, atol=1e-6)
    # the SUPERB probe: Linear(D, 256) -> ReLU -> Linear(256, n)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(D, 256), (256, 7)]


def test_layer_weights_are_a_convex_combination():
    lw = LayerWeights(3)
    with torch.no_grad():
        lw.weights.copy_(torch.tensor([0.0, math.log(2), math.log(5)]))
    stacked = torch.stack([torch.full((2, 4), v) for v in (1.0, 2.0, 3.0)])
    assert torch.allclose(lw(stacked), torch.full((2, 4), (1 + 4 + 15) / 8))
    assert torch.allclose(lw.normalized(), torch.tensor([1 / 8, 2 / 8, 5 / 8]))


# ----------------------------------------------------------------------------------- expert
def test_expert_trains_evaluates_and_writes_results(corpus, tmp_path):
    torch.manual_seed(0)
    cfg = config(corpus / "manifest", steps_from_epochs=True)
    runner = cfg["runner"]  # the very dict s3prl's runner reads total_steps from when training starts
    expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path), **cfg)
    assert {s: len(d) for s, d in expert.datasets.items()} == {"train": 104, "dev": 26, "test": 26}
    assert runner["total_steps"] == 50 * math.ceil(104 / 16)  # epochs of this fold, not the table's
    wav, label, uid = expert.datasets["train"][0]
    assert wav.dtype == np.float32 and len(wav) >= 16000 and isinstance(label, int)

    logger = Logger()
    opt = torch.optim.AdamW(expert.parameters(), lr=1e-2)
    first = run_split(expert, "dev", logger, 0)
    assert first == ["dev-best.ckpt"]
    for epoch in range(6):
        assert run_split(expert, "train", logger, epoch + 1, train=True, opt=opt) == []
    assert run_split(expert, "dev", logger, 7) == ["dev-best.ckpt"]
    run_split(expert, "test", logger, 7)
    # A worse dev score must not ask for a new best checkpoint.
    assert run_split(expert, "dev", logger, 8, informative=False) == []

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["task"] == "emotion_cafe" and results["fold"] == "fold1" and results["primary"] == "weighted_f1"
    test = results["test"]
    assert set(test["metrics"]) == {"weighted_f1", "uar", "accuracy", "loss"}
    assert test["metrics"]["weighted_f1"] > 0.9 and test["n"] == 26
    assert test["label_order"] == list(protocol.get_task("emotion_cafe").labels)
    assert np.array(test["confusion"]).sum() == 26 and np.array(test["confusion"]).shape == (7, 7)
    assert results["dev_best"]["step"] == 7 and results["dev"]["step"] == 8
    assert results["dev_best"]["metrics"]["weighted_f1"] > results["dev"]["metrics"]["weighted_f1"]
    for name in ("confusion.png", "confusion_dev.png", "confusion_test.png", "test_fold1_predictions.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert "emotion_cafe-fold1/test-weighted_f1" in logger.scalars
    assert "emotion_cafe-fold1/train-loss" in logger.scalars
    # The reference a probe that learnt nothing reaches, from this fold's own train and test labels.
    from collections import Counter
    train_counts = Counter(r.label for r in expert.datasets["train"].rows)
    majority = max(protocol.get_task("emotion_cafe").labels, key=lambda c: train_counts[c])
    test_labels = [r.label for r in expert.datasets["test"].rows]
    ref = test["reference"]
    assert ref["chance_uar"] == 1 / 7 and ref["majority_class"] == majority
    assert ref["majority_accuracy"] == test_labels.count(majority) / 26
    assert ref["majority_uar"] == 1 / len(set(test_labels))
    assert "participant" not in test  # per-speaker decisions are DAIC-WOZ's only


def test_identical_pooled_features_warn_once_naming_the_upstream(corpus, tmp_path, capsys):
    """Per-utterance normalised frames (s3prl fbank/mfcc) mean-pool to one vector: say so, once."""
    expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path), upstream="fbank", **config(corpus / "manifest"))
    records = defaultdict(list)
    for k, (wavs, targets, ids) in enumerate(expert.get_dataloader("train")):
        feats = [f - f.mean(dim=0) for f in fake_features(wavs, targets)]  # zero time-mean per utterance
        expert("train", feats, targets, ids, records)
        if k == 2:
            break
    err = capsys.readouterr().err
    assert err.count("WARNING: the mean-pooled features") == 1
    assert "upstream 'fbank'" in err and "-u egemaps" in err
    # informative features never warn
    expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path), upstream="care", **config(corpus / "manifest"))
    wavs, targets, ids = next(iter(expert.get_dataloader("train")))
    expert("train", fake_features(wavs, targets), targets, ids, defaultdict(list))
    assert "WARNING" not in capsys.readouterr().err


def test_expert_fold_choice_and_unknown_split(corpus, tmp_path):
    expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path),
                              **config(corpus / "manifest", test_fold="fold3"))
    speakers = {r.speaker for r in expert.datasets["test"].rows}
    assert speakers == {"05", "06"}
    with pytest.raises(ValueError, match="unknown split"):
        expert.get_dataloader("validation")
    with pytest.raises(ValueError, match="fold 'fold9' not in manifest"):
        DownstreamExpert(upstream_dim=D, expdir=str(tmp_path), **config(corpus / "manifest", test_fold="fold9"))


def test_regression_expert_reports_ccc(corpus, tmp_path):
    spec = protocol.register_task(protocol.TaskSpec(
        name="test_cafe_intensity", corpus="cafe", parser="downstream_tasks.corpora.cafe:parse_cafe",
        kind="regression", targets=("intensity",), fold_rule="speaker_rotation", n_folds=5,
        fold_params={"n_test": 2, "n_dev": 2}, table_train_size=104))
    try:
        prepare_task(spec.name, corpus / "raw", tmp_path / "m", progress=False, verbose=False)
        assert "intensity" in (tmp_path / "m" / "manifest.csv").read_text().splitlines()[0]
        torch.manual_seed(0)
        expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path / "exp"), **config(tmp_path / "m", task=spec.name))
        opt = torch.optim.AdamW(expert.parameters(), lr=1e-2)
        for epoch in range(6):
            run_split(expert, "train", Logger(), epoch, train=True, opt=opt)
        run_split(expert, "test", Logger(), 6)
        test = json.loads((tmp_path / "exp" / "results.json").read_text())["test"]
        assert set(test["metrics"]) == {"ccc_intensity", "ccc_mean", "loss"}
        assert test["reference"]["mean_ccc"] == {"intensity": 0.0}
        assert test["metrics"]["ccc_intensity"] > 0.5 and test["confusion"] is None
    finally:
        protocol.TASKS.pop(spec.name)


def test_layer_weights_read_from_the_evaluated_checkpoint(corpus, tmp_path):
    logits = torch.tensor([0.0, 1.0, 2.0] + [0.0] * 10)
    ckpt = tmp_path / "dev-best.ckpt"
    torch.save({"Featurizer": {"weights": logits}, "Args": argparse.Namespace(seed=1), "Step": 42}, ckpt)
    expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path), init_ckpt=str(ckpt),
                              **config(corpus / "manifest"))
    run_split(expert, "test", Logger(), 0)
    test = json.loads((tmp_path / "results.json").read_text())["test"]
    assert test["step"] == 42 and test["layer_weights_from"] == "dev-best.ckpt"
    assert np.allclose(test["layer_weights"], torch.softmax(logits, 0).numpy())
    assert (tmp_path / "layer_weights.png").stat().st_size > 0


class NotAllowed:
    pass


def test_checkpoint_with_arbitrary_pickles_is_not_unpickled(corpus, tmp_path, capsys):
    ckpt = tmp_path / "dev-best.ckpt"
    torch.save({"Featurizer": {"weights": torch.zeros(13)}, "Evil": NotAllowed()}, ckpt)
    expert = DownstreamExpert(upstream_dim=D, expdir=str(tmp_path), init_ckpt=str(ckpt),
                              **config(corpus / "manifest"))
    run_split(expert, "test", Logger(), 3)
    test = json.loads((tmp_path / "results.json").read_text())["test"]
    assert test["layer_weights"] is None and "cannot read layer weights" in capsys.readouterr().err


# ------------------------------------------------------------------------------- end to end
def test_end_to_end_through_s3prl_runner(corpus, tmp_path):
    from fixtures_corpora import save_tiny_care

    save_tiny_care(tmp_path / "care_tiny")
    expdir = tmp_path / "exp"
    overrides = ",,".join([
        "config.runner.total_steps=2", "config.runner.eval_step=2", "config.runner.save_step=2",
        "config.runner.log_step=1", "config.downstream_expert.datarc.num_workers=0",
        "config.downstream_expert.datarc.batch_size=8",
        f"config.downstream_expert.datarc.manifest_dir='{corpus / 'manifest'}'",
    ])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    common = dict(cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    train = subprocess.run([sys.executable, "run_downstream.py", "-m", "train", "-u", "care", "-k",
                            str(tmp_path / "care_tiny"), "-d", "emotion_cafe", "-p", str(expdir),
                            "--device", "cpu", "-o", overrides], **common)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (expdir / "dev-best.ckpt").is_file()
    evaluate = subprocess.run([sys.executable, "run_downstream.py", "-m", "evaluate", "-e",
                               str(expdir / "dev-best.ckpt"), "--device", "cpu"], **common)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    results = json.loads((expdir / "results.json").read_text())
    assert results["test"]["n"] == 26 and results["test"]["step"] == 2
    assert set(results["test"]["metrics"]) == {"weighted_f1", "uar", "accuracy", "loss"}
    weights = results["test"]["layer_weights"]
    assert len(weights) == 13 and sum(weights) == pytest.approx(1.0)
    for name in ("layer_weights.png", "confusion.png"):
        assert (expdir / name).is_file()


def test_s3prl_fbank_is_detected_as_degenerate_and_noise_frames_are_not():
    """The real cause: s3prl's fbank normalises each utterance, so its time means all vanish."""
    import s3prl.hub as hub

    from downstream_tasks.expert import degenerate_pooling

    torch.manual_seed(0)
    wavs = [torch.randn(16000) * s for s in (0.1, 0.5, 1.0)]
    with torch.no_grad():
        frames = list(getattr(hub, "fbank")().eval()(wavs)["hidden_states"][-1])
    assert degenerate_pooling(frames)
    assert not degenerate_pooling([torch.randn(100, 80) + k for k in range(3)])
    assert not degenerate_pooling(frames[:1])  # one utterance has nothing to compare with
