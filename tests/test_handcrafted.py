"""Handcrafted upstreams (`-u egemaps`, `-u compare`): s3prl's frame contract, exact padding, a fixed
scale that keeps each utterance's time-mean, and a real learning check through the stock runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from care_upstream import handcrafted
from care_upstream.handcrafted import FEATURE_SETS, HOP, HandcraftedExpert
from care_upstream.handcrafted_scale import SCALE, SOURCE_FILES
from faults import speech_like

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def experts():
    return {name: HandcraftedExpert(name) for name in FEATURE_SETS}


def wav(seconds, seed=0, gain=1.0):
    return torch.from_numpy(gain * speech_like(seconds, seed=seed))


def test_dims_rate_and_both_output_keys(experts):
    for name, dim in (("egemaps", 25), ("compare", 65)):
        up = experts[name]
        out = up([wav(1.0)])
        assert len(out["hidden_states"]) == 1 and out["hidden_states"][0].shape == (1, 100, dim)
        assert out["last_hidden_state"] is out["hidden_states"][0]
        assert up.get_downsample_rates("hidden_states") == HOP == 160
        assert up.padding_exact is True


def test_padded_batch_gives_solo_frames_and_zero_pads_through_featurizer(experts):
    """s3prl's Featurizer trims utterance i to round(len_i / 160): those frames must be its solo frames."""
    from s3prl.upstream.interfaces import Featurizer

    up = experts["egemaps"]
    featurizer = Featurizer(up, upstream_device="cpu")
    lengths = [16000, 12345, 800, 1000, 4080, 4240]  # 0.05 s (s3prl's own upstream test), round() ties
    wavs = [wav(n / 16000, seed=i)[:n] for i, n in enumerate(lengths)]
    out = up(wavs)
    batch = out["hidden_states"][0]
    assert batch.shape[1] == round(max(lengths) / 160)
    trimmed = featurizer(wavs, out)
    for w, n, feats, padded in zip(wavs, lengths, trimmed, batch):
        solo = up([w])["hidden_states"][0][0]
        assert solo.shape[0] == round(n / 160)
        assert torch.equal(feats, solo)
        assert torch.count_nonzero(padded[len(solo):]) == 0
        assert torch.isfinite(solo).all()


def test_scaled_is_raw_standardised_by_the_recorded_constants(experts):
    raw = HandcraftedExpert("egemaps", scale=False)
    x = [wav(1.5, seed=3)]
    scaled_feats = experts["egemaps"](x)["hidden_states"][0][0]
    raw_feats = raw(x)["hidden_states"][0][0]
    rows = SCALE["egemaps"]["lld"]
    mean = torch.tensor([r[1] for r in rows])
    std = torch.tensor([r[2] for r in rows])
    assert torch.allclose(scaled_feats, (raw_feats - mean) / std, atol=1e-5)
    # raw LLD scales differ by orders of magnitude (why the probe needs the scale); scaled ones do not
    raw_spread = raw_feats.abs().mean(0)
    assert raw_spread.max() / raw_spread[raw_spread > 0].min() > 1e3
    assert scaled_feats.abs().mean() < 10


def test_scale_constants_record_their_source_and_fit_opensmile(experts):
    assert len(SOURCE_FILES) >= 10 and all(len(sha) == 64 for _, _, sha in SOURCE_FILES)
    for name, up in experts.items():
        rows = SCALE[name]["lld"]
        assert [r[0] for r in rows] == up.feature_names
        assert all(r[2] > 0 for r in rows) and SCALE[name]["frames"] > 1000


def test_other_opensmile_descriptors_are_refused():
    with pytest.raises(ValueError, match="handcrafted_scale.py.*egemaps_raw"):
        handcrafted.load_scale(FEATURE_SETS["egemaps"], ["not", "these"])


def test_time_mean_differs_between_utterances(experts):
    """No per-utterance normalisation: a louder, other utterance pools to another vector (fbank's failure)."""
    for up in experts.values():
        a = up([wav(1.0, seed=1)])["hidden_states"][0][0].mean(0)
        b = up([wav(1.0, seed=2, gain=3.0)])["hidden_states"][0][0].mean(0)
        assert (a - b).abs().max() > 0.1


def test_repeated_waveform_is_served_from_the_cache(experts, monkeypatch):
    up = HandcraftedExpert("egemaps")
    x = wav(1.0, seed=4)
    first = up([x])["hidden_states"][0]
    calls = []
    monkeypatch.setattr(handcrafted, "lld_frames", lambda *a: calls.append(1) or np.zeros((1, 25)))
    assert torch.equal(up([x.clone()])["hidden_states"][0], first) and not calls
    up([wav(1.0, seed=5)])
    assert calls == [1]


def test_cache_respects_its_byte_budget():
    up = HandcraftedExpert("egemaps", cache_bytes=100 * 25 * 4 * 2)  # two 1 s utterances
    for seed in range(4):
        up([wav(1.0, seed=seed)])
    assert len(up._cache) == 2 and up._cached <= up.cache_bytes


def test_a_checkpoint_is_refused_not_ignored():
    with pytest.raises(ValueError, match="no weights: drop -k weights.pt"):
        HandcraftedExpert("egemaps", ckpt="weights.pt")


def test_missing_opensmile_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensmile", None)
    with pytest.raises(handcrafted.OpenSmileUnavailable, match="-u compare .*pip install opensmile"):
        HandcraftedExpert("compare")


def test_hub_names_resolve_after_registration():
    from care_superb.s3prl_registry import register

    register()
    from s3prl import hub

    assert hub.egemaps(ckpt=None, model_config=None, refresh=False).feature_set.dim == 25
    assert hub.compare_raw(ckpt=None, model_config=None, refresh=False).scaled is False


def test_egemaps_through_the_stock_runner_learns_the_demo_emotions(tmp_path):
    """`run_downstream.py -m train -u egemaps` then `-m evaluate`: UAR well above chance (1/7) on the
    demo corpus, whose prosody depends on the emotion. A real feature extractor, the stock probe and
    its stock optimiser (AdamW 1e-4), 100 steps (test UAR 0.46 when written)."""
    from fixtures_corpora import prepare_demo_cafe

    manifest = prepare_demo_cafe(tmp_path / "raw", tmp_path / "manifest", seed=0)
    expdir = tmp_path / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    overrides = ",,".join([
        "config.runner.total_steps=100", "config.runner.eval_step=25", "config.runner.save_step=25",
        "config.downstream_expert.datarc.num_workers=0", "config.downstream_expert.datarc.batch_size=16",
        f"config.downstream_expert.datarc.manifest_dir='{manifest}'",
    ])
    for args in (["-m", "train", "-u", "egemaps", "-d", "emotion_cafe", "-p", str(expdir), "-o", overrides],
                 ["-m", "evaluate", "-e", str(expdir / "dev-best.ckpt")]):
        out = subprocess.run([sys.executable, "run_downstream.py", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    test = json.loads((expdir / "results.json").read_text())["test"]
    assert test["n"] == 26
    assert test["metrics"]["uar"] >= 0.3, test["metrics"]  # chance 1/7 = 0.143
