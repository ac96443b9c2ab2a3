"""CaFE, EmoDB and RAVDESS-Song: parsers on full-size trees (every real file name, tiny audio),
the documented fold counts through `prepare`, and refusal of bad input."""

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from downstream_tasks.corpora.base import CorpusError
from downstream_tasks.corpora.cafe import parse_cafe
from downstream_tasks.corpora.emodb import parse_emodb
from downstream_tasks.corpora.ravdess import parse_ravdess_song
from downstream_tasks.manifest import read_manifest
from downstream_tasks.prepare import main as prepare_main
from downstream_tasks.prepare import prepare_task

TONE = {sr: (0.1 * np.sin(2 * np.pi * 220 * np.arange(int(0.05 * sr)) / sr)).astype(np.float32)
        for sr in (16000, 48000)}


def tone(path: Path, sr: int = 48000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # by file object: libsndfile cannot open non-UTF-8 names itself
        sf.write(f, TONE[sr], sr, subtype="PCM_16", format="WAV")


# ------------------------------------------------------------------------------------- CaFE
# Folder names as different unzip tools produce them: raw CP437 bytes (Info-ZIP),
# cp1252 mojibake (EmoBox's lists). Labels must come from the file name, so these never matter.
CP437 = {"C": os.fsdecode(b"Col\x8are"), "D": os.fsdecode(b"D\x82go\x96t")}
CP1252 = {"C": "ColŠre", "D": "D‚go–t"}
PLAIN = {"J": "Joie", "P": "Peur", "S": "Surprise", "T": "Tristesse"}


def cafe_names(actors=range(1, 13), sentences=range(1, 7)):
    for a in actors:
        for s in sentences:
            yield "N", f"{a:02d}-N-1-{s}.wav"
        for e in "CDJPST":
            for i in (1, 2):
                for s in sentences:
                    yield e, f"{a:02d}-{e}-{i}-{s}.wav"


def cafe_path(root: Path, release: str, letter: str, name: str, folders) -> Path:
    if letter == "N":
        return root / release / "Neutre" / name
    folder = {**PLAIN, **folders}[letter]
    return root / release / folder / ("Fort" if name.split("-")[2] == "2" else "Faible") / name


def make_cafe(root: Path, releases=("CaFE_48k",), folders=CP437, **kw) -> int:
    n = 0
    for k, (letter, name) in enumerate(cafe_names(**kw)):
        if releases == ("CaFE_192k_1", "CaFE_192k_2"):
            # split between the two zips, with some files in both (dedupe by name)
            chosen = [releases[k % 2]] + ([releases[1 - k % 2]] if k % 10 == 0 else [])
        else:
            chosen = releases
        for rel in chosen:
            tone(cafe_path(root, rel, letter, name, folders))
        n += 1
    return n


@pytest.fixture(scope="module")
def cafe_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cafe")
    make_cafe(root)
    # macOS leftovers must be ignored, not parsed
    (root / "CaFE_48k" / "Neutre" / "._01-N-1-1.wav").write_bytes(b"\x00\x05\x16\x07 junk")
    (root / "CaFE_48k" / ".DS_Store").write_bytes(b"junk")
    return root


def test_cafe_parser_full_inventory(cafe_root):
    utts = parse_cafe(cafe_root)
    assert len(utts) == 936
    per_actor = Counter(u.speaker for u in utts)
    assert sorted(per_actor) == [f"{a:02d}" for a in range(1, 13)] and set(per_actor.values()) == {78}
    labels = Counter(u.label for u in utts)
    assert labels == {"neutral": 72, "anger": 144, "disgust": 144, "happiness": 144, "fear": 144,
                      "surprise": 144, "sadness": 144}
    u = next(u for u in utts if u.id == "cafe-03-D-2-5")
    assert u.label == "disgust" and u.extra == {"intensity": 2, "sentence": 5, "sex": "m"}
    assert u.path.parent.parent.name == CP437["D"]


def test_cafe_prepare_gives_624_156_156_in_every_fold(cafe_root, tmp_path):
    summary = prepare_task("emotion_cafe", cafe_root, tmp_path, progress=False, verbose=False)
    assert summary["n_utterances"] == 936 and summary["n_skipped"] == 0
    for k, (fold, per) in enumerate(summary["folds"].items()):
        assert [per[s]["n"] for s in ("train", "dev", "test")] == [624, 156, 156]
        assert per["test"]["speakers"] == [f"{2 * k + 1:02d}", f"{2 * k + 2:02d}"]
        spk = [set(per[s]["speakers"]) for s in ("train", "dev", "test")]
        assert not (spk[0] & spk[1] or spk[0] & spk[2] or spk[1] & spk[2])
        assert per["test"]["classes"] == {"neutral": 12, "anger": 24, "disgust": 24, "happiness": 24,
                                          "fear": 24, "surprise": 24, "sadness": 24}
    m = read_manifest(tmp_path)
    assert m.fold_names == [f"fold{k}" for k in range(1, 6)] and len(m.rows) == 936
    assert m.rows[0].duration == pytest.approx(0.05)
    # each speaker is in exactly one split per fold, and is tested exactly once across the folds
    tested = Counter(r.speaker for r in m.rows for f in m.fold_names if r.folds[f] == "test")
    assert set(tested.values()) == {78} and len(tested) == 10


def test_cafe_192k_two_roots_deduplicated_and_48k_preferred(tmp_path):
    make_cafe(tmp_path, releases=("CaFE_192k_1", "CaFE_192k_2"), folders=CP1252)
    utts = parse_cafe(tmp_path)
    assert len(utts) == 936 and len({u.id for u in utts}) == 936
    roots = Counter(u.path.relative_to(tmp_path).parts[0] for u in utts)
    assert set(roots) == {"CaFE_192k_1", "CaFE_192k_2"}
    tone(tmp_path / "CaFE_48k" / "Neutre" / "01-N-1-1.wav")
    again = {u.id: u for u in parse_cafe(tmp_path)}
    assert len(again) == 936
    assert again["cafe-01-N-1-1"].path.relative_to(tmp_path).parts[0] == "CaFE_48k"


def test_cafe_label_comes_from_the_name_not_the_folder(tmp_path):
    tone(tmp_path / "CaFE_48k" / "Tristesse" / "Faible" / "01-J-1-1.wav")
    (u,) = parse_cafe(tmp_path)
    assert u.label == "happiness"


@pytest.mark.parametrize("name, problem", [
    ("01-X-1-1.wav", "unknown emotion letter 'X'"),
    ("01_C_1_1.wav", "file name is not CaFE's"),
    ("01-N-2-1.wav", "intensity 2 is not valid for emotion N"),
    ("13-C-1-1.wav", "actor 13 outside"),
    ("01-C-1-7.wav", "sentence 7 outside"),
])
def test_cafe_refuses_bad_names_naming_the_file(tmp_path, name, problem):
    tone(tmp_path / "CaFE_48k" / "Neutre" / "01-N-1-1.wav")
    tone(tmp_path / "CaFE_48k" / "Odd" / name)
    with pytest.raises(CorpusError, match=problem) as info:
        parse_cafe(tmp_path)
    assert info.value.path.endswith(name)


def test_cafe_empty_root_refused(tmp_path):
    with pytest.raises(CorpusError, match="no .wav files"):
        parse_cafe(tmp_path)


# ------------------------------------------------------------------------------------ EmoDB
EMODB_SPEAKERS = {"03": 49, "08": 58, "09": 43, "10": 38, "11": 55, "12": 35, "13": 61, "14": 69,
                  "15": 56, "16": 71}
EMODB_EMOTIONS = {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "T": 62, "N": 79}
TEXTS = ["a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10"]


def emodb_names():
    """535 names with EmoDB's per-speaker and per-emotion totals."""
    speakers = [s for s, n in EMODB_SPEAKERS.items() for _ in range(n)]
    letters = [e for e, n in EMODB_EMOTIONS.items() for _ in range(n)]
    used = Counter()
    for spk, letter in zip(speakers, letters):
        k = used[(spk, letter)]
        used[(spk, letter)] += 1
        yield f"{spk}{TEXTS[k % 10]}{letter}{'abcdefghijklmnopqrstuvwxyz'[k // 10]}.wav"


@pytest.fixture(scope="module")
def emodb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("emodb")
    for name in emodb_names():
        tone(root / "wav" / name, sr=16000)
    (root / "lablaut").mkdir()
    (root / "lablaut" / "03a01Fa.lab").write_text("not audio")
    (root / "erkennung.txt").write_text("not audio")
    return root


def test_emodb_parser_full_inventory(emodb_root):
    utts = parse_emodb(emodb_root)
    assert len(utts) == 535
    assert Counter(u.speaker for u in utts) == EMODB_SPEAKERS
    assert Counter(u.label for u in utts) == {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69,
                                              "joy": 71, "sadness": 62, "neutral": 79}
    u = next(u for u in utts if u.id == "emodb-03a01Wa")
    assert (u.speaker, u.label, u.extra["sex"]) == ("03", "anger", "m")


def test_emodb_prepare_fold_sizes(emodb_root, tmp_path):
    summary = prepare_task("emotion_emodb", emodb_root, tmp_path, progress=False, verbose=False)
    f1 = summary["folds"]["fold1"]
    assert [f1[s]["n"] for s in ("train", "dev", "test")] == [347, 81, 107]
    assert f1["test"]["speakers"] == ["03", "08"] and f1["dev"]["speakers"] == ["09", "10"]
    spk = sorted(EMODB_SPEAKERS)
    for k in range(5):
        per = summary["folds"][f"fold{k + 1}"]
        test = spk[2 * k:2 * k + 2]
        dev = [spk[(2 * k + 2) % 10], spk[(2 * k + 3) % 10]]
        assert per["test"]["speakers"] == test and per["dev"]["speakers"] == sorted(dev)
        assert per["test"]["n"] == sum(EMODB_SPEAKERS[s] for s in test)
        assert per["dev"]["n"] == sum(EMODB_SPEAKERS[s] for s in dev)
        assert sum(per[s]["n"] for s in ("train", "dev", "test")) == 535


@pytest.mark.parametrize("name, problem", [
    ("03a01Xa.wav", "unknown emotion letter 'X'"),
    ("04a01Fa.wav", "unknown speaker 04"),
    ("03-a01-F-a.wav", "not EmoDB's"),
])
def test_emodb_refuses_bad_names(tmp_path, name, problem):
    tone(tmp_path / "wav" / "03a01Fa.wav", sr=16000)
    tone(tmp_path / "wav" / name, sr=16000)
    with pytest.raises(CorpusError, match=problem) as info:
        parse_emodb(tmp_path)
    assert name in str(info.value)


# --------------------------------------------------------------------------------- RAVDESS
def ravdess_song_names(actor: int):
    for emo in range(1, 7):
        for intensity in ((1,) if emo == 1 else (1, 2)):
            for statement in (1, 2):
                for rep in (1, 2):
                    yield f"03-02-{emo:02d}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}.wav"


@pytest.fixture(scope="module")
def ravdess_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ravdess")
    base = root / "Audio_Song_Actors_01-24"
    for actor in range(1, 25):
        if actor == 18:
            continue
        for name in ravdess_song_names(actor):
            tone(base / f"Actor_{actor:02d}" / name)
    tone(base / "Actor_01" / "03-01-08-02-01-01-01.wav")  # a speech file: not this task's
    (base / "Actor_01" / "._03-02-01-01-01-01-01.wav").write_bytes(b"junk")
    return root


def test_ravdess_parser_full_inventory(ravdess_root):
    utts = parse_ravdess_song(ravdess_root)
    assert len(utts) == 1012
    per_actor = Counter(u.speaker for u in utts)
    assert len(per_actor) == 23 and "18" not in per_actor and set(per_actor.values()) == {44}
    assert Counter(u.label for u in utts) == {"neutral": 92, "calm": 184, "happy": 184, "sad": 184,
                                              "angry": 184, "fearful": 184}


def test_ravdess_prepare_gives_704_132_176(ravdess_root, tmp_path):
    summary = prepare_task("emotion_ravdess_song", ravdess_root, tmp_path, progress=False, verbose=False)
    for per in summary["folds"].values():
        assert [per[s]["n"] for s in ("train", "dev", "test")] == [704, 132, 176]
        assert [len(per[s]["speakers"]) for s in ("train", "dev", "test")] == [16, 3, 4]
    assert summary["folds"]["fold5"]["dev"]["speakers"] == ["22", "23", "24"]


@pytest.mark.parametrize("folder, name, problem", [
    ("Actor_01", "03-02-07-01-01-01-01.wav", "emotion code 07 does not exist for song"),
    ("Actor_02", "03-02-03-01-01-01-01.wav", "not inside Actor_01"),
    ("Actor_01", "01-02-03-01-01-01-01.wav", "modality 01"),
    ("Actor_01", "03-02-01-02-01-01-01.wav", "intensity 02 is not valid for emotion 01"),
    ("Actor_01", "03-02-03-01-01-01.wav", "not RAVDESS"),
])
def test_ravdess_refuses_bad_files(tmp_path, folder, name, problem):
    tone(tmp_path / "Actor_01" / "03-02-01-01-01-01-01.wav")
    tone(tmp_path / folder / name)
    with pytest.raises(CorpusError, match=problem) as info:
        parse_ravdess_song(tmp_path)
    assert name in str(info.value)


# ------------------------------------------------------------------------------- bad audio
def test_prepare_skips_corrupt_empty_and_nan_files_and_lists_them(tmp_path):
    root = tmp_path / "raw"
    make_cafe(root, sentences=[1])
    base = root / "CaFE_48k"
    corrupt = base / "Neutre" / "01-N-1-1.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage, not a wav file at all")
    empty = base / "Neutre" / "02-N-1-1.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 48000)
    nan = base / "Neutre" / "03-N-1-1.wav"
    x = TONE[48000].copy()
    x[10] = np.nan
    sf.write(str(nan), x, 48000, subtype="FLOAT")
    inf = base / "Neutre" / "04-N-1-1.wav"
    x[10] = np.inf
    sf.write(str(inf), x, 48000, subtype="FLOAT")
    out = tmp_path / "out"
    summary = prepare_task("emotion_cafe", root, out, progress=False, verbose=False)
    assert summary["n_parsed"] == 156 and summary["n_skipped"] == 4 and summary["n_utterances"] == 152
    with open(out / "skipped.csv", newline="") as f:
        rows = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}
    assert rows["01-N-1-1.wav"].startswith("unreadable")
    assert rows["02-N-1-1.wav"] == "no samples"
    assert rows["03-N-1-1.wav"] == rows["04-N-1-1.wav"] == "NaN or infinite samples"
    ids = {r.id for r in read_manifest(out).rows}
    assert "cafe-01-N-1-1" not in ids and "cafe-05-N-1-1" in ids
    assert json.loads((out / "summary.json").read_text())["n_skipped"] == 4


def test_prepare_cli_help_and_error_exit(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        prepare_main(["--help"])
    assert info.value.code == 0 and "manifest.csv" in capsys.readouterr().out
    tone(tmp_path / "CaFE_48k" / "Neutre" / "01-N-9-1.wav")
    with pytest.raises(SystemExit) as info:
        prepare_main(["emotion_cafe", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "01-N-9-1.wav" in err and "error" in err


def test_prepare_rerun_reuses_audio_checks_and_rechecks_changed_files(tmp_path, monkeypatch):
    from downstream_tasks import prepare

    root = tmp_path / "raw"
    make_cafe(root, sentences=[1])
    out = tmp_path / "out"
    prepare_task("emotion_cafe", root, out, progress=False, verbose=False)
    assert (out / ".audio_check.json").is_file()
    changed = root / "CaFE_48k" / "Neutre" / "05-N-1-1.wav"
    x = TONE[48000].copy()
    x[3] = np.nan
    sf.write(str(changed), x, 48000, subtype="FLOAT")
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse clocks
    opened = []
    real = prepare.probe_audio
    monkeypatch.setattr(prepare, "probe_audio", lambda path, seg=None: opened.append(path) or real(path, seg))
    summary = prepare_task("emotion_cafe", root, out, progress=False, verbose=False)
    assert [Path(p).name for p in opened] == ["05-N-1-1.wav"]
    assert summary["n_skipped"] == 1 and summary["n_utterances"] == 155


# ----------------------------------------------------------------------------------- audio
def test_load_audio_downmixes_resamples_pads_and_crops(tmp_path):
    from downstream_tasks.audio import AudioConfig, load_audio

    left = 0.2 * np.sin(2 * np.pi * 200 * np.arange(24000) / 48000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).astype(np.float32)
    sf.write(str(tmp_path / "st.wav"), stereo, 48000, subtype="FLOAT")
    wav = load_audio(tmp_path / "st.wav")
    assert wav.shape == (16000,)  # 0.5 s at 16 kHz, zero-padded to 1 s
    assert wav[8000:].abs().max() == 0
    assert wav[:8000].abs().max() == pytest.approx(0.1, abs=0.01)  # mean of the two channels
    raw = load_audio(tmp_path / "st.wav", crop_pad=False)
    assert raw.shape == (8000,)

    sf.write(str(tmp_path / "long.wav"), np.full(16000 * 31, 0.1, dtype=np.float32), 16000, subtype="FLOAT")
    assert load_audio(tmp_path / "long.wav").shape == (16000 * 30,)
    assert load_audio(tmp_path / "long.wav", AudioConfig(max_seconds=2)).shape == (32000,)


def test_load_audio_segments_are_concatenated(tmp_path):
    from downstream_tasks.audio import load_audio, probe_audio

    ramp = (np.arange(16000) / 16000).astype(np.float32)
    sf.write(str(tmp_path / "r.wav"), ramp, 16000, subtype="FLOAT")
    got = load_audio(tmp_path / "r.wav", segments=[(0.1, 0.2), (0.5, 0.55)], crop_pad=False).numpy()
    assert np.allclose(got, np.concatenate([ramp[1600:3200], ramp[8000:8800]]))
    assert probe_audio(tmp_path / "r.wav", [(0.1, 0.2), (0.5, 0.55)]) == pytest.approx(0.15)


def test_audio_errors_name_the_file(tmp_path):
    from downstream_tasks.audio import AudioError, load_audio

    with pytest.raises(AudioError, match=r"nothere\.wav: file not found"):
        load_audio(tmp_path / "nothere.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match=r"bad\.wav: unreadable") as info:
        load_audio(tmp_path / "bad.wav")
    assert isinstance(info.value, ValueError)
