"""The plain-torch PASE+ encoder (`pretrain.targets.pase_plus`) and `--acoustic pase+` from pip alone.

`tests/data/pase_plus_keys.json` is the state dict (key names, order and shapes) of the authors'
``WaveFe`` built from their ``cfg/frontend/PASE+.cfg`` (copied to `tests/data/PASE+.cfg`), recorded
once from github.com/santi-pdp/pase: the official ``FE_e199.ckpt`` holds exactly these keys.
"""

from __future__ import annotations

import csv
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pretrain.targets.acoustic import AcousticSettings, PasePlusExtractor, to_model_frames
from pretrain.targets.frames import care_frame_count
from pretrain.targets.pase_plus import (
    PaseLoadError,
    PasePlusConfig,
    PasePlusEncoder,
    QRNNLayer,
    load_pase_plus,
)

DATA = Path(__file__).resolve().parent / "data"
CFG = DATA / "PASE+.cfg"


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomised(seed: int = 0) -> PasePlusEncoder:
    """PASE+ with every parameter and BatchNorm statistic redrawn, so no value sits at its init."""
    torch.manual_seed(seed)
    model = PasePlusEncoder(PasePlusConfig.from_file(CFG))
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if not v.dtype.is_floating_point:
                continue
            if "running_var" in k:
                v.copy_(torch.rand_like(v) + 0.5)
            elif k.endswith(("low_hz_", "band_hz_")):
                v.mul_(torch.empty_like(v).uniform_(0.8, 1.2))
            else:
                v.copy_(torch.randn_like(v) * (0.5 if v.dim() < 2 else v[0].numel() ** -0.5))
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return _randomised()


@pytest.fixture(scope="module")
def official_ckpt(model, tmp_path_factory):
    """A random-weights checkpoint in the official format: ``torch.save(frontend.state_dict())``."""
    path = tmp_path_factory.mktemp("pase") / "FE_e199.ckpt"
    torch.save(model.state_dict(), path)
    return path


def test_key_names_and_shapes_are_those_of_the_original_model():
    recorded = [tuple(k) for k in json.loads((DATA / "pase_plus_keys.json").read_text())]
    built = [(k, list(v.shape)) for k, v in PasePlusEncoder(PasePlusConfig.from_file(CFG)).state_dict().items()]
    assert len(recorded) == 78
    assert built == [(k, list(s)) for k, s in recorded]


def test_the_real_cfg_file_gives_the_pase_plus_network():
    cfg = PasePlusConfig.from_file(CFG)
    assert cfg == PasePlusConfig.pase_plus()
    assert cfg.hop == 160 and cfg.emb_dim == 256 and cfg.rnn_pool and cfg.denseskips and cfg.norm_out
    # keys the file leaves out take WaveFe's defaults, not PASE+'s
    assert PasePlusConfig.from_dict({"emb_dim": 100}).rnn_pool is False


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "JSON object"),
    ('{"kwidths": [3], "colour": 1}', "unknown WaveFe argument.*colour"),
    ('{"rnn_type": "lstm"}', "rnn_type='lstm' is not built"),
    ('{"kwidths": [251, 20], "strides": [1]}', "differ in length"),
    ("{not json", "not a readable JSON"),
])
def test_bad_config_is_a_sentence_naming_the_file(tmp_path, text, match):
    path = tmp_path / "PASE+.cfg"
    path.write_text(text)
    with pytest.raises(PaseLoadError, match=match) as e:
        PasePlusConfig.from_file(path)
    assert str(path) in str(e.value)


def test_output_is_256_dims_at_100_hz(model):
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for n in (16000, 16000 + 159, 24000 + 1):
            y = model(torch.from_numpy(0.1 * rng.standard_normal((1, n)).astype(np.float32)))
            assert y.shape == (1, 256, model.num_frames(n))
            assert model.num_frames(n) in (n // 160, n // 160 + 1)
        assert model.num_frames(16000) == 100
        x = torch.from_numpy(0.1 * rng.standard_normal((3, 8000)).astype(np.float32))
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-5, atol=1e-5)  # batch = alone
        assert torch.isfinite(model(x)).all()


def test_shortest_input_is_where_reflect_padding_allows(model):
    assert model.min_samples == 471  # the authors' code fails below it as well
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 471)).shape == (1, 256, 3)
    with pytest.raises(ValueError, match="at least 471 samples, got 470"):
        model(torch.randn(1, 1, 470))


def test_qrnn_layer_is_the_gated_recurrence():
    torch.manual_seed(0)
    layer = QRNNLayer(3, 4, window=2).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    w, b = layer.linear.weight, layer.linear.bias
    c = torch.zeros(2, 4, dtype=torch.float64)
    expect = []
    for t in range(6):
        prev = x[t - 1] if t > 0 else torch.zeros_like(x[0])
        z, f, o = (torch.cat([x[t], prev], 1) @ w.T + b).chunk(3, dim=1)
        c = torch.sigmoid(f) * torch.tanh(z) + (1 - torch.sigmoid(f)) * c
        expect.append(torch.sigmoid(o) * c)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.stack(expect))


def test_skips_are_averaged_down_to_the_output_rate():
    skip = torch.arange(2 * 11, dtype=torch.float32).view(1, 2, 11)
    pooled = PasePlusEncoder._pool(skip, 3)  # factor 3: frames 0-2, 3-5, 6-8; 9-10 dropped
    assert torch.equal(pooled, torch.tensor([[[1.0, 4.0, 7.0], [12.0, 15.0, 18.0]]]))


def test_sinc_filters_are_normalised_symmetric_band_passes(model):
    with torch.no_grad():
        filt = model.blocks[0].conv.filters()[:, 0]  # (64, 251)
    assert filt.shape == (64, 251)
    torch.testing.assert_close(filt, filt.flip(1))
    torch.testing.assert_close(filt[:, 125], torch.ones(64))


def test_official_checkpoint_loads_strictly_and_reproduces_the_model(model, official_ckpt, tmp_path):
    x = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal((1, 1, 9000))).astype(np.float32))
    loaded = load_pase_plus(official_ckpt, CFG)
    assert not loaded.training
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    # the trainer's Saver format {"step", "state_dict"} is read too
    saver = tmp_path / "saver.ckpt"
    torch.save({"step": 199, "state_dict": model.state_dict()}, saver)
    with torch.inference_mode():
        assert torch.equal(load_pase_plus(saver, CFG)(x), model(x))


def test_checkpoint_that_does_not_match_names_the_keys(model, tmp_path):
    state = OrderedDict(model.state_dict())
    state.pop("rnn.layers.0.linear.bias")
    state["decoder.weight"] = torch.zeros(1)
    path = tmp_path / "FE.ckpt"
    torch.save(state, path)
    with pytest.raises(PaseLoadError, match=r"missing: rnn\.layers\.0\.linear\.bias; unexpected: decoder\.weight") as e:
        load_pase_plus(path, CFG)
    assert str(path) in str(e.value)
    small = tmp_path / "PASE.cfg"  # the original PASE: 100-d output, no QRNN, no skips
    small.write_text('{"kwidths":[251, 20, 11, 11, 11, 11, 11, 11], "strides":[1, 10, 2, 1, 2, 1, 2, 2], '
                     '"fmaps":[64, 64, 128, 128, 256, 256, 512, 512], "emb_dim":100, "norm_out":true}')
    torch.save(model.state_dict(), path)
    with pytest.raises(PaseLoadError, match=r"unexpected: denseskips\.0\.weight.*shape .*W\.weight"):
        load_pase_plus(path, small)


class _Pickled:
    pass


def test_checkpoint_with_pickled_objects_is_refused_without_running_it(model, tmp_path):
    path = tmp_path / "FE.ckpt"
    torch.save({"state_dict": model.state_dict(), "opts": _Pickled()}, path)
    with pytest.raises(PaseLoadError, match=r"pickled Python objects \(test_pase\._Pickled\).*refused") as e:
        load_pase_plus(path, CFG)
    assert str(path) in str(e.value)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(PaseLoadError, match="not a readable torch checkpoint"):
        load_pase_plus(path, CFG)
    with pytest.raises(PaseLoadError, match="not found"):
        load_pase_plus(tmp_path / "missing.ckpt", CFG)


def test_extractor_without_files_says_what_to_pass():
    from pretrain.targets.transcripts import TeacherUnavailableError

    with pytest.raises(TeacherUnavailableError, match="--pase-ckpt FE_e199.ckpt and --pase-config PASE\\+.cfg"):
        PasePlusExtractor()


def test_cli_targets_with_pase_plus_end_to_end(model, official_ckpt, tmp_path, capsys):
    """`care-pretrain targets --acoustic pase+ --pase-ckpt FE_e199.ckpt --pase-config PASE+.cfg` from pip alone."""
    from pretrain.cli import main
    from pretrain.targets.store import TargetStore

    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(2)
    lengths = {"a": 16000, "b": 12345, "short": 450}  # 450: one CARE frame, too short for PASE+'s padding
    for name, n in lengths.items():
        sf.write(audio / f"{name}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000, subtype="FLOAT")
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"]] + [[k, "hello world"] for k in lengths])
    out = tmp_path / "cache"
    rc = main(["targets", "--audio", str(audio), "--out", str(out), "--transcripts", str(tmp_path / "t.csv"),
               "--text-encoder", "minilm", "--acoustic", "pase+", "--pase-ckpt", str(official_ckpt),
               "--pase-config", str(CFG), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    store = TargetStore(out)
    assert store.ids == ["a", "b"] and store.acoustic_dim == 256
    with open(out / "skipped.csv", newline="") as f:
        assert [(r["id"], r["reason"]) for r in csv.DictReader(f)] == [("short", "too_short")]
    for utt in store.ids:
        wav, _ = sf.read(store.path(utt), dtype="float32")
        with torch.inference_mode():
            raw = model(torch.from_numpy(wav).view(1, 1, -1))[0].T.numpy()
        assert raw.shape == (model.num_frames(len(wav)), 256) and abs(raw.shape[0] - len(wav) / 160) <= 1
        expect, _ = to_model_frames(raw, len(wav), AcousticSettings(kind="pase+"))
        got = store.get(utt)["acoustic"]
        assert got.shape == (care_frame_count(len(wav)), 256)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    # resuming the cache with another PASE+ checkpoint would mix two teachers: refused before any work
    other = tmp_path / "other.ckpt"
    torch.save(_randomised(seed=1).state_dict(), other)
    rc = main(["targets", "--audio", str(audio), "--out", str(out), "--transcripts", str(tmp_path / "t.csv"),
               "--text-encoder", "minilm", "--acoustic", "pase+", "--pase-ckpt", str(other),
               "--pase-config", str(CFG), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "made with other settings (pase_ckpt_sha" in err
