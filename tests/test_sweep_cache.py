"""Feature cache: exact time-means, resume after a kill, corrupt shards, an upstream failing on a file."""

import numpy as np
import pytest
import soundfile as sf
import torch

from sweep.cache import CacheConfig, CacheError, FeatureCache, UttRef, time_means
from sweep.cells import UpstreamSpec

RATE = 320


def _fake_hidden(wav):
    """Two 'layers' of per-frame stats: deterministic, so expected means are computable by hand."""
    T = wav.numel() // RATE  # fewer frames than round(len / RATE) when len is not a multiple
    frames = wav[: T * RATE].view(T, RATE)
    h1 = torch.stack([frames.mean(1), frames.std(1)], dim=1)
    return [h1[None], (2 * h1 + 1)[None]]


def _featurize(wav):
    return time_means(_fake_hidden(wav), wav.numel(), RATE)


def _load(u):
    data, _ = sf.read(u.path, dtype="float32")
    return torch.from_numpy(data)


@pytest.fixture
def utts(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(5):
        path = tmp_path / "audio" / f"u{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, rng.standard_normal(16000 + 480 * i).astype("float32") * 0.1, 16000, subtype="FLOAT")
        out.append(UttRef(f"u{i}", str(path)))
    return out


def test_time_means_uses_featurizer_frames():
    h = torch.arange(10, dtype=torch.float32).view(1, 10, 1)
    # round(3000 / 320) = 9 frames of the 10 produced
    p = time_means([h, h * 2], 3000, 320)
    assert p.used == 9 and p.produced == 10 and p.means[:, 0].tolist() == pytest.approx([4.0, 8.0])
    # variance of 0..8 is 60/9; of 0,2,..,16 four times that
    assert p.frame_var.tolist() == pytest.approx([60 / 9, 240 / 9])
    # the upstream made fewer frames than round(len / rate): all of them are used
    p = time_means([h], 3500, 320)
    assert p.used == 10 and p.means[0, 0].item() == pytest.approx(4.5)


def test_extract_load_and_reuse(tmp_path, utts):
    cache = FeatureCache(tmp_path / "cache", UpstreamSpec(hub="fake", key="fake"), CacheConfig(shard_size=2))
    rep = cache.extract(utts, _featurize, _load)
    assert rep.extracted == 5 and rep.reused == 0 and not rep.failed
    assert len(list(cache.dir.glob("shard-*.safetensors"))) == 3
    feats, errors, frames = cache.load(utts, with_frames=True)
    assert not errors
    assert frames["u1"] == (16480 // RATE, 16480 // RATE, 16480)  # fewer produced than round(): all used
    for u in utts:
        torch.testing.assert_close(feats[u.id], _featurize(_load(u)).means)
    rep = cache.extract(utts, _featurize, _load)
    assert rep.extracted == 0 and rep.reused == 5


def test_resume_after_kill(tmp_path, utts):
    cache = FeatureCache(tmp_path / "cache", UpstreamSpec(hub="fake", key="fake"), CacheConfig(shard_size=2))
    calls = []

    def dying(wav):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # a kill in the middle of the second shard
        return _featurize(wav)

    with pytest.raises(KeyboardInterrupt):
        cache.extract(utts, dying, _load)
    assert len(list(cache.dir.glob("shard-*.safetensors"))) == 1  # first shard survived, nothing half-written
    assert not list(cache.dir.glob("*.tmp"))
    rep = cache.extract(utts, _featurize, _load)
    assert rep.reused == 2 and rep.extracted == 3
    with pytest.raises(CacheError):
        FeatureCache(tmp_path / "other", UpstreamSpec(hub="fake", key="fake")).load(utts)


def test_corrupt_shard_is_detected_and_recomputed(tmp_path, utts):
    logs = []
    cache = FeatureCache(tmp_path / "cache", UpstreamSpec(hub="fake", key="fake"), CacheConfig(shard_size=2),
                         log=logs.append)
    cache.extract(utts, _featurize, _load)
    shard = sorted(cache.dir.glob("shard-*.safetensors"))[0]
    n_in_shard = len(cache._read_shard(shard)[0])
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the tensor data: loads fine, checksum catches it
    shard.write_bytes(bytes(raw))
    rep = cache.extract(utts, _featurize, _load)
    assert len(rep.corrupt_shards) == 1 and "checksum mismatch" in rep.corrupt_shards[0]
    assert rep.extracted == n_in_shard and rep.reused == 5 - n_in_shard
    assert (cache.dir / "corrupt" / shard.name).is_file()
    assert any("corrupt shard" in line for line in logs)
    # a truncated shard does not even load
    shard2 = sorted(cache.dir.glob("shard-*.safetensors"))[0]
    shard2.write_bytes(shard2.read_bytes()[:40])
    rep = cache.extract(utts, _featurize, _load)
    assert len(rep.corrupt_shards) == 1 and "unreadable" in rep.corrupt_shards[0]
    feats, _ = cache.load(utts)
    for u in utts:
        torch.testing.assert_close(feats[u.id], _featurize(_load(u)).means)


def test_upstream_failing_on_one_file(tmp_path, utts):
    cache = FeatureCache(tmp_path / "cache", UpstreamSpec(hub="fake", key="fake"), CacheConfig(shard_size=10),
                         log=lambda s: None)

    def picky(wav):
        if wav.numel() == 16000 + 480 * 3:
            raise RuntimeError("kernel size can't be greater than input")
        return _featurize(wav)

    rep = cache.extract(utts, picky, _load)
    assert rep.failed == {"u3": "RuntimeError: kernel size can't be greater than input"}
    feats, errors = cache.load(utts)
    assert set(feats) == {"u0", "u1", "u2", "u4"} and set(errors) == {"u3"}
    # retried on the next run; once it works, the failure is gone
    rep = cache.extract(utts, _featurize, _load)
    assert rep.extracted == 1 and not rep.failed
    feats, errors = cache.load(utts)
    assert len(feats) == 5 and not errors


def test_key_follows_file_content(tmp_path, utts):
    cache = FeatureCache(tmp_path / "cache", UpstreamSpec(hub="fake", key="fake"))
    k0 = cache.key(utts[0])
    data, sr = sf.read(utts[0].path, dtype="float32")
    sf.write(utts[0].path, data * 0.5, sr, subtype="FLOAT")
    assert cache.key(utts[0]) != k0
    assert cache.key(UttRef("x", utts[1].path, [(0.0, 0.5)])) != cache.key(utts[1])


def test_spread_tells_normalised_frames_from_real_features(tmp_path, utts):
    """Per-utterance normalised frames (s3prl's fbank) pool to the same vector for every utterance:
    `Spread.ratio` is ~0 for them and clearly positive for features whose means differ."""
    def normalised(wav):
        h = _fake_hidden(wav)[0]
        h = (h - h.mean(1, keepdim=True)) / h.std(1, keepdim=True)
        return time_means([h], wav.numel(), RATE)

    def shifted(wav):  # the same frames plus a per-utterance offset: means differ across utterances
        h = _fake_hidden(wav)[0]
        h = (h - h.mean(1, keepdim=True)) / h.std(1, keepdim=True) + wav.numel() / 16000
        return time_means([h], wav.numel(), RATE)

    flat = FeatureCache(tmp_path / "a", UpstreamSpec(hub="flat", key="flat"))
    flat.extract(utts, normalised, _load)
    real = FeatureCache(tmp_path / "b", UpstreamSpec(hub="real", key="real"))
    real.extract(utts, shifted, _load)
    assert flat.spread(utts).n == 5 and flat.spread(utts).ratio < 1e-10
    assert real.spread(utts).ratio > 1e-3
