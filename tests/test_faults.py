"""Fault injection: every entry point meets the bad input of `tests/faults.py`.

The rule each section checks: every file a command finds is used or listed with its reason; every
cache or shard read back is verified, keys included; every error names the file and the problem in
one sentence, without a traceback for expected bad input; nothing finished is lost.

One section per entry point; append new cases to the section of the command they exercise.
"""

from __future__ import annotations

import faults  # noqa: F401  (builders used by the sections below)

# ------------------------------------------------------------------ care_core (decoder, atomic writes)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from care_core.audio import AudioError, check_usable, read_mono  # noqa: E402


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    """Manifests, weights and tables are for colleagues on a shared machine too: an atomic write
    gives the mode a plain open() would (mkstemp alone gives 0600 whatever the umask)."""
    import os

    from care_core import atomic

    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "manifest.csv", "id\n")
        with atomic.atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("manifest.csv", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


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

import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from downstream_tasks import prepare as prepare_mod  # noqa: E402
from downstream_tasks.manifest import read_manifest  # noqa: E402

EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")


def emodb_tree(root):
    """Two short clips per EmoDB speaker, named as EmoDB names them: enough for its 6/2/2 folds."""
    for k, spk in enumerate(EMODB_SPEAKERS):
        for text, letter in (("a01", "W"), ("b02", "N")):
            faults.good_wav(root / "wav" / f"{spk}{text}{letter}a.wav", seconds=0.1, seed=k)
    return root


def skipped_rows(out):
    with open(out / "skipped.csv", newline="") as f:
        return {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}


def test_prepare_accounts_for_every_bad_file_by_one_rule(tmp_path):
    root = emodb_tree(tmp_path / "raw")
    wav = root / "wav"
    faults.silent_wav(wav / "03a01Wa.wav")
    faults.one_sample_wav(wav / "08a01Wa.wav")
    faults.truncated_wav(wav / "09a01Wa.wav")
    faults.dangling_symlink(wav / "10a05Wa.wav")
    faults.symlink_loop(wav / "11a05Wa.wav")
    faults.upper_case_copy(wav / "12a05Fa.wav")  # 12a05Fa.WAV: good audio, upper-case extension
    out = tmp_path / "out"
    summary = prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    skipped = skipped_rows(out)
    assert "silent" in skipped["03a01Wa.wav"] and "too short" in skipped["08a01Wa.wav"]
    assert "truncated" in skipped["09a01Wa.wav"]
    assert "dangling symbolic link" in skipped["10a05Wa.wav"]
    assert "symbolic links" in skipped["11a05Wa.wav"]  # ELOOP: too many levels of symbolic links
    ids = {r.id for r in read_manifest(out).rows}
    assert "emodb-12a05Fa" in ids and not ids & {"emodb-03a01Wa", "emodb-08a01Wa", "emodb-09a01Wa"}
    # every name found is either in the manifest or in skipped.csv, and the counts say so
    assert summary["n_parsed"] == 23 == summary["n_utterances"] + summary["n_skipped"]
    assert summary["n_skipped"] == len(skipped) == 5


def test_prepare_finds_labelled_audio_with_an_upper_case_extension_and_names_broken_links(tmp_path):
    """Corpora whose label files name the audio (MOSI here; IEMOCAP, DAIC-WOZ, MELD alike)."""
    from fixtures_corpora import make_mosi

    truth = make_mosi(tmp_path / "raw")
    seg = tmp_path / "raw" / "Raw" / "Audio" / "WAV_16000" / "Segmented"
    (seg / "6_0THN4chvY_1.wav").rename(seg / "6_0THN4chvY_1.WAV")
    (seg / "tmZoasNr4rU_1.wav").unlink()
    faults.dangling_symlink(seg / "tmZoasNr4rU_1.wav")
    out = tmp_path / "out"
    summary = prepare_mod.prepare_task("sentiment_mosi", tmp_path / "raw", out, progress=False, verbose=False)
    ids = {r.id for r in read_manifest(out).rows}
    assert "mosi-6_0THN4chvY_1" in ids and "mosi-tmZoasNr4rU_1" not in ids
    assert "dangling symbolic link" in skipped_rows(out)["tmZoasNr4rU_1.wav"]
    assert summary["n_utterances"] + summary["n_skipped"] == len(truth)


def test_prepare_cache_keys_on_content_not_size_and_mtime(tmp_path):
    root = emodb_tree(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    victim = root / "wav" / "13a01Wa.wav"
    st = victim.stat()
    good = victim.read_bytes()
    faults.silent_wav(victim, seconds=0.1)  # replaced in place: same size, mtime put back
    assert victim.stat().st_size == len(good)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    assert "silent" in skipped_rows(out)["13a01Wa.wav"]


@pytest.mark.parametrize("cache", ["[1, 2]", '"text"', '{"version": 2, "entries": [1]}', "{not json"])
def test_prepare_rebuilds_a_cache_of_the_wrong_type(tmp_path, capsys, cache):
    root = emodb_tree(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / prepare_mod.CACHE).write_text(cache)
    summary = prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    assert summary["n_utterances"] == 20
    assert "checking every file again" in capsys.readouterr().err


def test_prepare_out_that_is_a_file_is_one_sentence(tmp_path, capsys):
    root = emodb_tree(tmp_path / "raw")
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        prepare_mod.main(["emotion_emodb", "--root", str(root), "--out", str(tmp_path / "taken"), "--no-progress"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "taken: --out is an existing file" in err and "Traceback" not in err


def test_a_kill_between_manifest_and_summary_is_refused_by_the_reader(tmp_path, monkeypatch):
    root = emodb_tree(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    assert len(read_manifest(out).rows) == 20
    (root / "wav" / "14a01Wa.wav").unlink()  # the corpus changed; prepare runs again and is killed

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_mod, "write_skipped", killed)  # right after manifest.csv is written
    with pytest.raises(KeyboardInterrupt):
        prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    with pytest.raises(ValueError, match="did not finish"):
        read_manifest(out)
    monkeypatch.undo()
    prepare_mod.prepare_task("emotion_emodb", root, out, progress=False, verbose=False)
    assert len(read_manifest(out).rows) == 19
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "n_utterances": 20}))
    with pytest.raises(ValueError, match="19 rows but its summary.json says 20"):
        read_manifest(out)

# ------------------------------------------------------------------ upstream loading (run_downstream.py, -k, sweep)


def _tiny_care_folder(folder: Path) -> Path:
    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    torch.manual_seed(0)
    return CARE(CareConfig.tiny()).save_pretrained(folder)


@pytest.mark.parametrize("how", ["truncate", "empty", "garbage"])
def test_care_from_pretrained_names_a_damaged_safetensors(tmp_path, how):
    from care_upstream.model import CARE

    folder = _tiny_care_folder(tmp_path / "care")
    weights = faults.corrupt_safetensors(folder / "model.safetensors", how)
    for source in (folder, weights):
        with pytest.raises(ValueError) as err:
            CARE.from_pretrained(source)
        msg = str(err.value)
        assert msg.startswith(f"{weights}: not a readable safetensors file") and "\n" not in msg
        assert type(err.value) is ValueError  # not safetensors' bare SafetensorError
        assert err.value.__suppress_context__  # the safetensors traceback is not chained on


@pytest.mark.parametrize("content, why", [
    (b"[1, 2, 3]", "a JSON list, expected an object"),
    (b'"care"', "a JSON str, expected an object"),
    (b"\xff\xfe garbage", "not valid UTF-8 JSON"),
    (b"{not json", "not valid UTF-8 JSON"),
    (b"", "not valid UTF-8 JSON"),
    (b'{"n_common": 6, "bogus": 1}', "unknown CareConfig fields"),
    (b'{"wavlm": [], "text": {}}', "CareConfig.wavlm must be"),
])
def test_care_from_pretrained_names_a_bad_config_json(tmp_path, content, why):
    from care_upstream.model import CARE

    folder = _tiny_care_folder(tmp_path / "care")
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ValueError) as err:
        CARE.from_pretrained(folder)
    msg = str(err.value)
    assert msg.startswith(f"{folder / 'config.json'}: not a CARE config.json") and why in msg, msg
    assert "\n" not in msg


@pytest.fixture()
def launcher_main(tmp_path):
    """`run_downstream.py` in-process (s3prl is imported once per test session); the hub entries
    the launcher wraps are restored afterwards."""
    from care_superb import launcher
    from care_superb.s3prl_registry import register

    def run(*args):
        with pytest.raises(SystemExit) as stop:
            launcher.main(["-m", "train", "-d", "emotion_cafe", "-p", str(tmp_path / "exp"), *args])
        return stop.value.code

    yield run
    register()


@pytest.mark.parametrize("how", ["truncate", "empty"])
def test_run_downstream_names_a_damaged_safetensors_in_one_sentence(tmp_path, capsys, launcher_main, how):
    folder = _tiny_care_folder(tmp_path / "care")
    weights = faults.corrupt_safetensors(folder / "model.safetensors", how)
    assert launcher_main("-u", "care", "-k", str(folder)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"run_downstream.py: -u care: {weights}: not a readable safetensors file"), err


def test_run_downstream_names_a_config_json_list(tmp_path, capsys, launcher_main):
    folder = _tiny_care_folder(tmp_path / "care")
    (folder / "config.json").write_text("[1, 2]")
    assert launcher_main("-u", "care_acoustic", "-k", str(folder / "model.safetensors")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"run_downstream.py: -u care_acoustic: {folder / 'config.json'}: not a CARE config.json"), err


@pytest.mark.parametrize("args, expected", [
    (("-u", "care", "-k", "no/such/folder.safetensors"), "-u care: CARE checkpoint 'no/such/folder.safetensors' does not exist"),
    (("-u", "egemaps", "-k", "w.pt"), "-u egemaps computes openSMILE features and has no weights: drop -k w.pt"),
])
def test_run_downstream_missing_or_needless_checkpoint_is_one_sentence(capsys, launcher_main, args, expected):
    assert launcher_main(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"run_downstream.py: {expected}"), err


def test_run_downstream_unknown_upstream_lists_close_names(tmp_path, capsys, launcher_main):
    assert launcher_main("-u", "egemap") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "-u 'egemap' is not an upstream" in err and "close names: egemaps" in err, err
    assert launcher_main("-u", "carre") == 2
    assert "close names: care" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()  # stopped before s3prl made the experiment folder


def test_run_downstream_bad_weights_exit_without_traceback(tmp_path):
    """The real command line: exit status 2, one line on stderr after the runner's own log lines."""
    import subprocess
    import sys

    folder = _tiny_care_folder(tmp_path / "care")
    weights = faults.corrupt_safetensors(folder / "model.safetensors", "garbage")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "run_downstream.py", "-m", "train", "-u", "care", "-k", str(folder),
                          "-d", "emotion_cafe", "-p", str(tmp_path / "exp")], cwd=root, capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"run_downstream.py: -u care: {weights}: not a readable")


# ------------------------------------------------------------------ care-superb register-s3prl


def test_register_s3prl_into_a_tree_python_does_not_import_says_what_to_do(tmp_path, capsys):
    """A source tree that is not the s3prl Python imports (the pip-installed one is): its runner would
    fail with `module 's3prl.hub' has no attribute 'care'`, so registration must not report success."""
    from care_superb import checkout

    repo = tmp_path / "s3prl-src"
    (repo / "s3prl" / "downstream").mkdir(parents=True)
    (repo / "s3prl" / "hub.py").write_text("from s3prl.upstream.wavlm.hubconf import *\n")
    with pytest.raises(SystemExit) as stop:
        checkout.main([str(repo), "--tasks", "emotion_cafe"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "registered into" in err
    assert f"imports s3prl from {checkout.imported_package_dir()}" in err
    assert f"pip install -e {repo}" in err and f"care-superb register-s3prl {checkout.imported_package_dir()}" in err
    assert checkout.HUB_LINE in (repo / "s3prl" / "hub.py").read_text()  # shims ready for after pip install -e


@pytest.mark.parametrize("case", ["not a checkout", "unknown task"])
def test_register_s3prl_bad_target_is_one_sentence(tmp_path, capsys, case):
    from care_superb import checkout

    repo = tmp_path / "s3prl-src"
    if case == "unknown task":
        (repo / "s3prl" / "downstream").mkdir(parents=True)
        (repo / "s3prl" / "hub.py").write_text("")
    with pytest.raises(SystemExit) as stop:
        checkout.main([str(repo), "--tasks", "emotion_nope"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("care-superb register-s3prl: ")
    assert ("not an s3prl checkout" if case == "not a checkout" else "emotion_nope") in err, err


# ------------------------------------------------------------------ care-pretrain targets

import shutil  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from pretrain.targets.acoustic import AcousticSettings  # noqa: E402
from pretrain.targets.extract import ExtractConfig, run_extraction  # noqa: E402
from pretrain.targets.store import TargetStore, TargetStoreError  # noqa: E402
from pretrain.targets.text import TextEncoder, TextEncoderSettings  # noqa: E402
from pretrain.targets.transcripts import TranscriptTable  # noqa: E402


class _TargetsText:
    """Stand-in semantic teacher (the faults here are about files, not teachers): 4 numbers per text."""

    dim = 4

    def encode(self, texts):
        return np.array([[len(t), t.count(" "), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)


class _TargetsWhisper:
    truncated = 0

    def transcribe(self, wavs):
        return ["hello world"] * len(wavs)


def _targets_run(audio, out, **kw):
    """One extraction with the offline eGeMAPS teacher and the stand-ins above (2 files a shard)."""
    cfg = ExtractConfig(audio=str(audio), out=str(out), acoustic=AcousticSettings(kind="egemaps"), shard_size=2,
                        progress=False, **kw)
    return run_extraction(cfg, transcriber=_TargetsWhisper(), text_encoder=_TargetsText())


@pytest.fixture(scope="module")
def targets_cache(tmp_path_factory):
    """A finished cache of four 0.3 s clips in two shards; tests that damage it work on a copy."""
    root = tmp_path_factory.mktemp("targets")
    for i in range(4):
        faults.good_wav(root / "audio" / f"u{i}.wav", seconds=0.3, seed=i)
    _targets_run(root / "audio", root / "cache")
    store = TargetStore(root / "cache")
    return root, {u: store.get(u) for u in store.ids}


def _targets_copy(targets_cache, tmp_path):
    root, values = targets_cache
    shutil.copytree(root / "cache", tmp_path / "cache")
    return tmp_path / "cache", values


def test_targets_store_and_list_non_utf8_file_names(tmp_path):
    audio = tmp_path / "audio"
    faults.good_wav(audio / "a.wav", seconds=0.3)
    good = faults.non_utf8_name(audio)  # caf\xe9.wav
    bad = os.path.join(os.fsencode(audio), b"mud\xe9.wav")
    sf.write(open(bad, "wb"), np.zeros(4800, np.float32), 16000, format="WAV", subtype="PCM_16")  # silent
    summary = _targets_run(audio, tmp_path / "cache")
    assert summary["stored"] == 2 and summary["skipped_by_reason"] == {"silent": 1}
    store = TargetStore(tmp_path / "cache")
    utt = os.fsdecode(b"caf\xe9")
    assert store.ids == ["a", utt] and store.path(utt) == str(good)
    assert store.get(utt)["acoustic"].shape[1] == 25
    # skipped.csv names the file by its bytes on disk
    assert b"mud\xe9.wav,mud\xe9,silent," in (tmp_path / "cache" / "skipped.csv").read_bytes()


def test_targets_latin1_transcripts_is_a_sentence_naming_the_csv(tmp_path, capsys):
    from pretrain.cli import main

    faults.good_wav(tmp_path / "audio" / "a.wav", seconds=0.3)
    csv_path = tmp_path / "t.csv"
    csv_path.write_bytes(b"id,text\na,un caf\xe9 au lait\n")
    with pytest.raises(ValueError) as err:
        TranscriptTable(csv_path)
    assert str(err.value) == (f"{csv_path}: transcript CSV is not valid utf-8 at line 2 (byte b'\\xe9'); save it as "
                              f"UTF-8 or name its encoding with --transcripts-encoding (e.g. latin-1)")
    assert TranscriptTable(csv_path, encoding="latin-1").lookup("a", "a.wav") == "un café au lait"
    rc = main(["targets", "--audio", str(tmp_path / "audio"), "--out", str(tmp_path / "cache"), "--transcripts",
               str(csv_path), "--acoustic", "egemaps", "--text-encoder", str(tmp_path), "--no-progress"])
    err_text = capsys.readouterr().err
    assert rc == 2 and f"{csv_path}: transcript CSV is not valid utf-8" in err_text and "Traceback" not in err_text
    rc = main(["targets", "--audio", str(tmp_path / "audio"), "--out", str(tmp_path / "cache"), "--transcripts",
               str(csv_path), "--transcripts-encoding", "latin-1", "--acoustic", "egemaps", "--text-encoder",
               str(tmp_path), "--no-progress"])
    err_text = capsys.readouterr().err  # the CSV is accepted: the next problem is the (deliberately bad) encoder
    assert rc == 2 and f"{tmp_path}: text encoder folder has no config.json" in err_text


@pytest.mark.parametrize("config", [None, "[]", '{"hidden_size": 4}'])
def test_targets_text_encoder_folder_without_a_config_is_a_sentence(tmp_path, config):
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    if config is not None:
        (folder / "config.json").write_text(config)
    with pytest.raises(ValueError) as err:
        TextEncoder(TextEncoderSettings(name=str(folder)))
    expected = (f"{folder}: text encoder folder has no config.json" if config is None
                else f"{folder / 'config.json'}: not a transformers config")
    assert str(err.value).startswith(expected) and len(str(err.value)) < 300


@pytest.mark.parametrize("damage", ["bytes", "ids"])
def test_targets_damaged_shard_is_named_by_store_trainer_and_rerun(targets_cache, tmp_path, damage):
    from pretrain.data import PretrainDataset

    cache, values = _targets_copy(targets_cache, tmp_path)
    shard = cache / "shards" / "shard-w000of001-00001.safetensors"  # holds u2, u3
    if damage == "bytes":  # overwrite the last 64 bytes of the acoustic rows: finite, plausible, wrong
        data = bytearray(shard.read_bytes())
        data[-64:] = np.full(16, 0.5, np.float32).tobytes()
        shard.write_bytes(bytes(data))
    else:  # u2 and u3 exchange rows: every byte of every tensor intact
        faults.swap_safetensors_metadata_items(shard, "ids")
    store = TargetStore(cache)
    np.testing.assert_array_equal(store.get("u0")["acoustic"], values["u0"]["acoustic"])  # other shard fine
    with pytest.raises(TargetStoreError, match=f"^{shard}: "):
        store.get("u3")
    dataset = PretrainDataset(TargetStore(cache), ["u3"], crop_samples=3200, seed=0)
    with pytest.raises(TargetStoreError, match=f"^{shard}: "):
        dataset[0]  # the trainer's data loader reads through the same check
    # a rerun recomputes the damaged chunk; nothing else is redone and the values come back
    root = targets_cache[0]
    summary = _targets_run(root / "audio", cache)
    assert summary["this_session"]["utterances_per_s"]["write"] is not None
    store = TargetStore(cache)
    for utt, want in values.items():
        np.testing.assert_array_equal(store.get(utt)["acoustic"], want["acoustic"])


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "{not json"])
def test_targets_cache_json_of_the_wrong_type_is_a_sentence(targets_cache, tmp_path, text):
    cache, _ = _targets_copy(targets_cache, tmp_path)
    (cache / "index.json").write_text(text)
    with pytest.raises(TargetStoreError, match=f"^{cache / 'index.json'}: the merged index of a target cache "):
        TargetStore(cache)
    (cache / "run.json").write_text(text)
    with pytest.raises(TargetStoreError, match=f"^{cache / 'run.json'}: the settings file of a target cache "):
        _targets_run(targets_cache[0] / "audio", cache)


def test_targets_out_that_is_a_file_is_one_sentence(tmp_path, capsys):
    from pretrain.cli import main

    faults.good_wav(tmp_path / "audio" / "a.wav", seconds=0.3)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    rc = main(["targets", "--audio", str(tmp_path / "audio"), "--out", str(taken), "--acoustic", "egemaps",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{taken}: --out must be a cache folder, but this is an existing file" in err
    assert "Traceback" not in err


def test_targets_skip_bad_audio_by_the_one_usable_audio_rule(tmp_path):
    audio = tmp_path / "audio"
    faults.good_wav(audio / "ok.wav", seconds=0.3)
    built = {"silent": faults.silent_wav(audio / "silent.wav", seconds=0.3),
             "short": faults.one_sample_wav(audio / "short.wav"),
             "cut": faults.truncated_wav(audio / "cut.wav"),
             "junk": faults.garbage_file(audio / "junk.wav"),
             "gone": faults.dangling_symlink(audio / "gone.wav"),
             "loop": faults.symlink_loop(audio / "loop.wav")}
    faults.upper_case_copy(audio / "loud.wav")  # loud.WAV: good audio
    summary = _targets_run(audio, tmp_path / "cache")
    assert summary["stored"] == 2 and summary["files"] == 2 + len(built)  # every file found is accounted for
    with open(tmp_path / "cache" / "skipped.csv", newline="") as f:
        rows = {r["id"]: (r["reason"], r["detail"]) for r in csv.DictReader(f)}
    assert {k: v[0] for k, v in rows.items()} == {"silent": "silent", "short": "too_short", "cut": "truncated",
                                                 "junk": "unreadable", "gone": "unreadable", "loop": "unreadable"}
    assert TargetStore(tmp_path / "cache").ids == ["loud", "ok"]
    # the same words `care-superb prepare` lists: both commands apply care_core.audio.check_usable
    for name in ("silent", "short"):
        with pytest.raises(AudioError) as err:
            check_usable(read_mono(built[name])[0], built[name])
        assert rows[name][1] == err.value.problem


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
from care_superb import extract as extract_mod  # noqa: E402
from care_superb import predict as predict_mod  # noqa: E402
from care_superb.export_classifier import main as export_classifier_main  # noqa: E402
from fixtures_share import demo_run  # noqa: E402


@pytest.fixture(scope="module")
def share_run(demo_cafe, tmp_path_factory):
    return demo_run(demo_cafe, tmp_path_factory, "care")


def _predict_fails(argv, capsys):
    """predict exits 2 with one line naming the problem (no traceback); returns that line."""
    with pytest.raises(SystemExit) as exit_:
        predict_mod.main(argv + ["--no-progress"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("care-superb predict: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_predict_run_folder_without_checkpoint_is_a_sentence(share_run, tmp_path, capsys):
    run = tmp_path / "exp"
    run.mkdir()
    shutil.copy(share_run.run / "results.json", run)
    shutil.copy(share_run.run / "states-2.ckpt", run)
    wav = faults.good_wav(tmp_path / "a.wav")
    out = tmp_path / "pred.csv"
    line = _predict_fails([str(run), str(wav), "--out", str(out)], capsys)
    assert f"{run}: no checkpoint dev-best.ckpt (it holds states-2.ckpt; pick one with --checkpoint)" in line
    assert not out.exists()
    (run / "states-2.ckpt").unlink()
    assert "train it first" in _predict_fails([str(run), str(wav), "--out", str(out)], capsys)


def test_predict_classifier_whose_upstream_weights_are_missing_is_a_sentence(share_run, tmp_path, capsys):
    care = shutil.copytree(share_run.care, tmp_path / "care_moved")
    clf = tmp_path / "clf"
    export_classifier_main([str(share_run.run), "--out", str(clf), "--upstream-ckpt", str(care)])
    shutil.rmtree(care)
    out = tmp_path / "pred.csv"
    line = _predict_fails([str(clf), str(faults.good_wav(tmp_path / "a.wav")), "--out", str(out)], capsys)
    assert f"needs the upstream weights {care} (-u care), which do not exist here" in line
    assert "--include-upstream" in line and not out.exists()


def test_predict_skips_and_lists_zero_rate_and_empty_files_and_goes_on(share_run, tmp_path):
    folder = tmp_path / "in"
    good = [faults.good_wav(folder / "a.wav"), faults.good_wav(folder / "d.wav", seed=3)]
    zero = faults.zero_rate_wav(folder / "b.wav")
    empty = faults.empty_file(folder / "c.wav")
    out = tmp_path / "pred.csv"
    predict_mod.main([str(share_run.run), str(folder), "--out", str(out), "--no-progress"])
    with open(out) as f:
        assert [r["path"] for r in csv.DictReader(f)] == [str(p) for p in good]
    with open(tmp_path / "pred_skipped.csv") as f:
        skipped = {r["file"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {str(zero), str(empty)} and all(skipped.values())
    ext = tmp_path / "emb"
    extract_mod.main([str(folder), "--upstream", f"care:{share_run.care}", "--out", str(ext), "--no-progress"])
    assert sorted(p.name for p in ext.glob("*.safetensors")) == ["a.wav.safetensors", "d.wav.safetensors"]
    with open(ext / "skipped.csv") as f:
        assert {r["file"] for r in csv.DictReader(f)} == {str(zero), str(empty)}


def test_predict_only_bad_files_writes_the_list_and_no_predictions(share_run, tmp_path, capsys):
    bad = faults.empty_file(tmp_path / "in" / "c.wav")
    out = tmp_path / "pred.csv"
    line = _predict_fails([str(share_run.run), str(bad), "--out", str(out)], capsys)
    assert "no file could be read (1 skipped" in line and not out.exists()
    assert (tmp_path / "pred_skipped.csv").read_text().startswith("file,reason\n")


def test_folder_of_non_audio_files_is_a_sentence(share_run, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not audio")
    faults.garbage_file(folder / "blob.bin")
    out = tmp_path / "pred.csv"
    line = _predict_fails([str(share_run.run), str(folder), "--out", str(out)], capsys)
    assert f"{folder}: no audio files in this folder (2 other files" in line and not out.exists()
    with pytest.raises(SystemExit):
        extract_mod.main([str(folder), "--upstream", f"care:{share_run.care}", "--out", str(tmp_path / "e"),
                          "--no-progress"])
    assert f"care-superb extract: {folder}: no audio files" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_hub_id_not_in_the_offline_cache_is_a_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pred.csv"
    line = _predict_fails(["org/not-cached", str(faults.good_wav(tmp_path / "a.wav")), "--out", str(out)], capsys)
    assert "org/not-cached is not a local path and is not in the Hugging Face cache" in line
    assert "HF_HUB_OFFLINE=1" in line and not out.exists()
    with pytest.raises(SystemExit):
        extract_mod.main([str(tmp_path / "a.wav"), "--upstream", "care:org/not-cached", "--out", str(tmp_path / "e"),
                          "--no-progress"])
    assert "org/not-cached is not a local path" in capsys.readouterr().err


def test_predict_with_an_upstream_folder_says_it_is_not_a_classifier(demo_cafe, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    line = _predict_fails([str(demo_cafe / "tiny_care"), str(faults.good_wav(tmp_path / "a.wav")), "--out", str(out)],
                          capsys)
    assert "an upstream folder" in line and "care-superb extract --upstream care:" in line and not out.exists()


# ------------------------------------------------------------------ care-pretrain diagnose
@pytest.fixture(scope="module")
def diagnose_inputs(tmp_path_factory):
    """A planted target cache (40 short clips) and a random tiny CARE sized for it."""
    from test_diagnose import make_planted_cache

    from care_upstream.config import CareConfig
    from care_upstream.model import CARE

    root = tmp_path_factory.mktemp("diagnose")
    cache = make_planted_cache(root)
    model = CARE(CareConfig.tiny(text="minilm")).save_pretrained(root / "tiny")
    return root, cache, model


def _diagnose_fails(args, capsys) -> str:
    from pretrain.cli import main as pretrain_main

    assert pretrain_main(["diagnose", *args, "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_diagnose_names_a_damaged_model(diagnose_inputs, tmp_path, capsys, how):
    root, cache, model = diagnose_inputs
    bad = Path(shutil.copytree(model, tmp_path / "bad"))
    faults.corrupt_safetensors(bad / "model.safetensors", how=how)
    line = _diagnose_fails(["--targets", str(cache), "--model", str(bad)], capsys)
    assert str(bad) in line


def test_diagnose_names_a_garbage_checkpoint_and_a_missing_cache(diagnose_inputs, tmp_path, capsys):
    root, cache, model = diagnose_inputs
    pt = faults.garbage_file(tmp_path / "ckpt_last.pt")
    assert str(pt) in _diagnose_fails(["--targets", str(cache), "--model", str(pt)], capsys)
    assert str(tmp_path / "none") in _diagnose_fails(["--targets", str(tmp_path / "none"), "--model", str(model)],
                                                     capsys)


def test_diagnose_names_an_audio_file_gone_since_the_targets(diagnose_inputs, tmp_path, capsys):
    root, cache, model = diagnose_inputs
    copy = Path(shutil.copytree(root, tmp_path / "copy", symlinks=True))
    store = TargetStore(cache)
    first = Path(store.path(store.ids[0]))
    index = (copy / "cache" / "index.json")
    index.write_text(index.read_text().replace(str(root), str(copy)))
    moved = copy / first.relative_to(root)
    moved.unlink()
    line = _diagnose_fails(["--targets", str(copy / "cache"), "--model", str(copy / "tiny")], capsys)
    assert str(moved) in line
