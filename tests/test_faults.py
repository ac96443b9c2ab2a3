"""Fault injection: every entry point meets the bad input of `tests/faults.py`.

The rule each section checks: every file a command finds is used or listed with its reason; every
cache or shard read back is verified, keys included; every error names the file and the problem in
one sentence, without a traceback for expected bad input; nothing finished is lost.

One section per entry point; append new cases to the section of the command they exercise.
"""

from __future__ import annotations

import faults  # noqa: F401  (builders used by the sections below)

# ------------------------------------------------------------------ care_core (decoder, atomic writes)

import pytest  # noqa: E402
import torch  # noqa: E402

from care_core.audio import AudioError, check_usable, read_mono  # noqa: E402


def test_decoder_refuses_a_truncated_wav_naming_it(tmp_path):
    path = faults.truncated_wav(tmp_path / "cut.wav")
    with pytest.raises(AudioError, match="cut.wav: truncated") as err:
        read_mono(path)
    assert err.value.reason == "truncated"
    assert read_mono(faults.good_wav(tmp_path / "whole.wav"))[0].shape == (16000,)


@pytest.mark.parametrize("build,reason", [(faults.silent_wav, "silent"), (faults.one_sample_wav, "too_short")])
def test_check_usable_is_the_one_rule(tmp_path, build, reason):
    path = build(tmp_path / "x.wav")
    wav, _, _ = read_mono(path)
    with pytest.raises(AudioError, match="x.wav: ") as err:
        check_usable(wav, path)
    assert err.value.reason == reason
    check_usable(read_mono(faults.good_wav(tmp_path / "ok.wav"))[0], tmp_path / "ok.wav")
    with pytest.raises(AudioError, match="too short"):
        check_usable(torch.full((399,), 0.5), "y.wav")


@pytest.mark.parametrize("build", [faults.garbage_file, faults.empty_file, faults.dangling_symlink,
                                   faults.symlink_loop])
def test_decoder_names_unreadable_files(tmp_path, build):
    path = build(tmp_path / "bad.wav")
    with pytest.raises(AudioError, match="bad.wav: ") as err:
        read_mono(path)
    assert err.value.reason in ("unreadable", "empty")

# ------------------------------------------------------------------ care-superb prepare

# ------------------------------------------------------------------ upstream loading (run_downstream.py, -k, sweep)

# ------------------------------------------------------------------ care-superb register-s3prl

# ------------------------------------------------------------------ care-pretrain targets

# ------------------------------------------------------------------ care-superb sweep (cache)


def _sweep_cache(tmp_path):
    """A feature cache of five short utterances with a deterministic fake upstream (two layers)."""
    import soundfile as sf

    from sweep.cache import FeatureCache, UttRef, time_means
    from sweep.cells import UpstreamSpec

    utts = [UttRef(f"u{i}", str(faults.good_wav(tmp_path / "audio" / f"u{i}.wav", seconds=0.5 + 0.1 * i, seed=i)))
            for i in range(5)]

    def featurize(wav):
        frames = wav[: wav.numel() // 320 * 320].view(-1, 320)
        h = torch.stack([frames.mean(1), frames.std(1)], 1)[None]
        return time_means([h, 2 * h + 1], wav.numel(), 320)

    def load(u):
        return torch.from_numpy(sf.read(u.path, dtype="float32")[0])

    cache = FeatureCache(tmp_path / "cache", UpstreamSpec(hub="fake", key="fake"), log=lambda s: None)
    cache.extract(utts, featurize, load)
    return cache, utts, featurize, load


def test_sweep_cache_detects_swapped_keys_and_recomputes(tmp_path):
    """Two swapped utterance keys in a shard (every tensor byte intact) would serve each utterance the
    other's features; the checksum covers the keys, so extraction moves the shard aside and redoes it."""
    cache, utts, featurize, load = _sweep_cache(tmp_path)
    [shard] = cache.dir.glob("shard-*.safetensors")
    faults.swap_safetensors_metadata_items(shard, "keys", 0, 1)
    report = cache.extract(utts, featurize, load)
    assert len(report.corrupt_shards) == 1 and "checksum mismatch" in report.corrupt_shards[0]
    assert report.extracted == 5 and (cache.dir / "corrupt" / shard.name).is_file()
    feats, _ = cache.load(utts)
    for u in utts:
        torch.testing.assert_close(feats[u.id], featurize(load(u)).means)


def test_sweep_cache_read_by_a_cell_is_verified(tmp_path):
    """A finished sweep's cache damaged afterwards: the cell's read (`FeatureCache.load`) refuses it in
    one sentence naming the shard, instead of training on another utterance's features."""
    from sweep.cache import CacheError

    cache, utts, _, _ = _sweep_cache(tmp_path)
    [shard] = cache.dir.glob("shard-*.safetensors")
    faults.swap_safetensors_metadata_items(shard, "keys", 2, 4)
    with pytest.raises(CacheError, match="checksum mismatch") as err:
        cache.load(utts)
    assert str(shard) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("how", ["empty", "truncate", "garbage"])
def test_sweep_names_a_corrupt_care_checkpoint(tmp_path, how, capsys):
    from fixtures_corpora import save_tiny_care
    from sweep.runner import main

    folder = save_tiny_care(tmp_path / "care_step0")
    weights = faults.corrupt_safetensors(folder / "model.safetensors", how)
    with pytest.raises(SystemExit) as err:
        main(["--tasks", "emotion_cafe", "--upstreams", f"care:{folder}", "--out", str(tmp_path / "runs")])
    msg = str(err.value)
    assert str(weights) in msg and "not a readable safetensors file" in msg and "\n" not in msg
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [
    (["--upstreams", "wavlmm"], "s3prl has no upstream named 'wavlmm'; did you mean wavlm"),
    (["--upstreams", "fbank", "mfcc", "--reference", "wavlm"], "--reference 'wavlm' is not one of --upstreams"),
    (["--upstreams", "fbank", "-o", "config.runner.total_steps=2"], "total_steps=2 is below config.runner.eval_step"),
])
def test_sweep_bad_input_is_one_sentence_and_not_rerun(tmp_path, capsys, argv, expected):
    """Unknown upstream, a --reference outside --upstreams, a config that can never pick a model: one
    sentence before anything runs, and no advice to rerun the same command (it would fail the same way)."""
    from sweep.runner import main

    with pytest.raises(SystemExit) as err:
        main(["--tasks", "emotion_cafe", "--out", str(tmp_path / "runs"), *argv])
    msg = str(err.value)
    assert expected in msg and "\n" not in msg
    assert "has no attribute" not in msg
    assert "rerun the same command" not in capsys.readouterr().err + msg

# ------------------------------------------------------------------ care-superb predict / extract
