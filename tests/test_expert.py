"""s3prl side of CARE: the upstream expert, s3prl's Featurizer on it, and the hub entries."""

import pytest
import torch

from care_upstream import hubconf
from care_upstream.config import CareConfig
from care_upstream.expert import UpstreamExpert
from care_upstream.model import CARE

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return CARE(CareConfig.tiny("minilm")).save_pretrained(tmp_path_factory.mktemp("care") / "care_tiny")


@pytest.mark.parametrize("variant, dim", [("care", 64), ("care_acoustic", 32), ("care_semantic", 32)])
def test_expert_on_one_second_of_noise_and_featurizer(ckpt, variant, dim):
    from s3prl.upstream.interfaces import Featurizer

    expert = UpstreamExpert(str(ckpt), model_config=None, variant=variant, refresh=False)
    assert expert.get_downsample_rates("hidden_states") == 320
    wavs = [torch.randn(16000), torch.randn(12000)]
    with torch.no_grad():
        out = expert(wavs)
    states = out["hidden_states"]
    assert len(states) == 13 and all(h.shape == (2, 49, dim) for h in states)

    featurizer = Featurizer(expert, upstream_device="cpu")
    assert featurizer.output_dim == dim and featurizer.layer_num == 13
    feats = featurizer(wavs, out)
    assert [f.shape for f in feats] == [(49, dim), (38, dim)]
    # weighted sum really mixes layers: uniform weights give the mean of the 13 states
    assert torch.allclose(feats[0], torch.stack(states)[:, 0].mean(0)[:49], atol=1e-5)


def test_last_hidden_state_is_the_thirteenth_state_and_s_selects_it(ckpt):
    from s3prl.upstream.interfaces import Featurizer

    expert = UpstreamExpert(str(ckpt), variant="care")
    wavs = [torch.randn(16000), torch.randn(12000)]
    with torch.no_grad():
        out = expert(wavs)
    assert out["last_hidden_state"] is out["hidden_states"][12]
    featurizer = Featurizer(expert, feature_selection="last_hidden_state", upstream_device="cpu")
    assert featurizer.feature_selection == "last_hidden_state"  # no silent fallback to the weighted sum
    assert not hasattr(featurizer, "weights")
    feats = featurizer(wavs, out)
    assert torch.equal(feats[0], out["hidden_states"][12][0, :49])
    assert torch.equal(feats[1], out["hidden_states"][12][1, :38])


def test_expert_declares_exact_padding_and_keeps_it_for_short_utterances(ckpt):
    """padding_exact (read by the sweep): a padded batch gives each utterance what it gets alone,
    down to one frame (400 samples), and the pad frames are zero."""
    assert UpstreamExpert.padding_exact is True
    expert = UpstreamExpert(str(ckpt), variant="care")
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(n, generator=g) for n in (400, 800, 16000)]
    with torch.no_grad():
        batch = expert(wavs)["hidden_states"]
        for i, w in enumerate(wavs):
            alone = expert([w])["hidden_states"]
            t = alone[0].shape[1]
            assert t == expert.model.config.num_frames(w.numel())
            for h, a in zip(batch, alone):
                assert (h[i, :t] - a[0]).abs().max() <= 2e-6 * max(1.0, a.abs().max()) and not h[i, t:].any()


def test_expert_rejects_wrong_sample_rate_and_bad_wavs(ckpt):
    expert = UpstreamExpert(str(ckpt))
    with pytest.raises(ValueError, match="16000 Hz"):
        expert([torch.randn(16000)], sample_rate=44100)
    with pytest.raises(ValueError, match="too short"):
        expert([torch.randn(16000), torch.randn(300)])
    with pytest.raises(ValueError, match="variant"):
        UpstreamExpert(str(ckpt), variant="wavlm")


def test_hub_entries_are_exactly_the_public_functions():
    import inspect

    public = {n for n, o in vars(hubconf).items() if not n.startswith("_") and callable(o)}
    assert {"care", "care_acoustic", "care_semantic", "care_random_base", "care_random_tiny"} <= public
    assert set(hubconf.__all__) == public  # no helper leaks onto s3prl.hub
    assert "RANDOM" in inspect.getdoc(hubconf.care_random_tiny) and "RANDOM" in inspect.getdoc(hubconf.care_random_base)


def test_hub_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CARE_CKPT", raising=False)
    for entry in (hubconf.care, hubconf.care_acoustic, hubconf.care_semantic):
        with pytest.raises(FileNotFoundError, match="convert-authors") as err:
            entry()
        assert "care-pretrain export" in str(err.value) and "CARE_CKPT" in str(err.value)
    monkeypatch.setenv("CARE_CKPT", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        hubconf.care()
    with pytest.raises(FileNotFoundError, match="nope"):
        hubconf.care(ckpt=str(tmp_path / "nope"))


def test_hub_finds_weights_by_argument_env_and_default(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CARE_CKPT", raising=False)
    assert hubconf.care(ckpt=str(ckpt)).variant == "care"
    monkeypatch.setenv("CARE_CKPT", str(ckpt))
    assert hubconf.care_semantic().variant == "care_semantic"
    monkeypatch.delenv("CARE_CKPT")
    default = tmp_path / ".cache" / "care_superb" / "care_base"
    CARE.from_pretrained(ckpt).save_pretrained(default)
    up = hubconf.care_acoustic(model_config=None, refresh=False)
    assert up.variant == "care_acoustic"
    with torch.no_grad():
        assert up([torch.randn(4000)])["hidden_states"][0].shape == (1, 12, 32)


def test_random_tiny_entry_runs_like_s3prl_calls_it():
    up = hubconf.care_random_tiny(ckpt=None, model_config=None, refresh=False)
    with torch.no_grad():
        states = up([torch.randn(8000)])["hidden_states"]
    assert len(states) == 13 and states[-1].shape == (1, 24, 64)
    again = hubconf.care_random_tiny()
    assert all(torch.equal(a, b) for a, b in zip(up.state_dict().values(), again.state_dict().values()))
