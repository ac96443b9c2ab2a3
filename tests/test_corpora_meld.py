"""MELD CSV parsing and PyAV audio extraction on a fake release with real AAC/mp4 clips."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from downstream_tasks import protocol
from downstream_tasks.corpora.base import CorpusError, Utterance
from downstream_tasks.corpora.meld import extract_meld_audio, parse_meld, read_meld_csv
from fixtures_corpora import MELD_ROWS, make_meld, make_mp4


def test_rows_become_utterances_with_official_splits(tmp_path):
    truth = make_meld(tmp_path)
    skipped = []
    utts = parse_meld(tmp_path, skipped=skipped)
    got = {u.id: u for u in utts}
    assert set(got) == {t["id"] for t in truth}
    for t in truth:
        u = got[t["id"]]
        assert (u.extra["split"], u.speaker, u.label, u.extra["text"]) == (t["split"], t["speaker"], t["emotion"],
                                                                            t["text"])
        assert u.path.is_file() and u.path.suffix == ".mp4"
    # Commas, doubled quotes, a newline and non-ASCII inside quoted cells survive the CSV reader.
    assert got["meld-train-dia0_utt2"].extra["text"] == 'That I did. That I did, "really".'
    assert got["meld-train-dia1_utt0"].extra["text"] == "Oh, yeah, \u2026 right!\nOn two lines."
    # The two known-bad clips are reported, never returned; unlabelled extras are ignored.
    assert {e.path.rsplit("/", 1)[-1] for e in skipped} == {"dia125_utt3.mp4", "dia110_utt7.mp4"}
    assert not any("dia66_utt9" in u.id or "final_videos" in u.id for u in utts)
    assert Counter(u.extra["split"] for u in utts) == {"train": 5, "dev": 2, "test": 2}


def test_identical_csv_copies_are_accepted_different_ones_refused(tmp_path):
    make_meld(tmp_path)
    dev = tmp_path / "MELD.Raw" / "dev_sent_emo.csv"
    copy = tmp_path / "MELD" / "data" / "MELD" / "dev_sent_emo.csv"  # declare-lab/MELD checkout, LF endings
    copy.parent.mkdir(parents=True)
    copy.write_bytes(dev.read_bytes().replace(b"\r\n", b"\n"))
    assert len(parse_meld(tmp_path, splits=("dev",))) == 2
    copy.write_bytes(dev.read_bytes().replace(b",disgust,", b",anger,"))
    with pytest.raises(CorpusError, match="2 different 'dev_sent_emo.csv' found"):
        parse_meld(tmp_path, splits=("dev",))


def test_known_bad_rows_are_dropped_even_in_strict_mode(tmp_path):
    make_meld(tmp_path)
    utts = parse_meld(tmp_path, strict=True)
    assert "meld-train-dia125_utt3" not in {u.id for u in utts}


def test_official_fold_rule_and_task_labels(tmp_path):
    make_meld(tmp_path)
    spec = protocol.get_task("emotion_meld")
    utts, dropped = protocol.apply_labels(spec, parse_meld(tmp_path))
    assert not dropped
    folds = protocol.assign_folds(spec, utts)
    assert list(folds) == ["fold1"]
    assert folds["fold1"] == [u.id.split("-")[1] for u in utts]


def test_csv_is_crlf_quoted_utf8(tmp_path):
    make_meld(tmp_path)
    raw = (tmp_path / "MELD.Raw" / "train" / "train_sent_emo.csv").read_bytes()
    assert b"\r\n" in raw and raw.count(b'"') > 10
    rows = read_meld_csv(tmp_path / "MELD.Raw" / "train" / "train_sent_emo.csv")
    assert len(rows) == sum(1 for r in MELD_ROWS if r[0] == "train")


def test_missing_clip_is_skipped_or_raises_in_strict_mode(tmp_path):
    make_meld(tmp_path)
    (tmp_path / "MELD.Raw" / "test" / "output_repeated_splits_test" / "dia0_utt1.mp4").unlink()
    skipped = []
    utts = parse_meld(tmp_path, skipped=skipped)
    assert "meld-test-dia0_utt1" not in {u.id for u in utts}
    assert any("dia0_utt1" in str(e) for e in skipped)
    with pytest.raises(CorpusError, match="dia0_utt1.mp4: clip missing"):
        parse_meld(tmp_path, strict=True)


def test_unknown_emotion_names_file_and_line(tmp_path):
    make_meld(tmp_path)
    path = tmp_path / "MELD.Raw" / "dev_sent_emo.csv"
    path.write_bytes(path.read_bytes().replace(b",disgust,", b",contempt,"))
    with pytest.raises(CorpusError, match=r"dev_sent_emo\.csv: line \d+: unknown emotion 'contempt'"):
        parse_meld(tmp_path)


def test_malformed_rows_and_missing_files(tmp_path):
    make_meld(tmp_path)
    path = tmp_path / "MELD.Raw" / "test_sent_emo.csv"
    good = path.read_bytes()
    path.write_bytes(good.replace(b"Utterance_ID", b"Utt_ID"))
    with pytest.raises(CorpusError, match=r"test_sent_emo\.csv: missing columns \['Utterance_ID'\]"):
        parse_meld(tmp_path)
    path.write_bytes(good.replace(b",0,1,3,19,", b",0,x,3,19,"))
    with pytest.raises(CorpusError, match=r"test_sent_emo\.csv: line \d+: non-integer"):
        parse_meld(tmp_path)
    path.write_bytes(good + b'99,"extra",Ross,joy,positive,0,0,3,19,a,b,surplus\r\n')
    with pytest.raises(CorpusError, match=r"test_sent_emo\.csv: line \d+: more fields"):
        parse_meld(tmp_path)
    path.unlink()
    with pytest.raises(CorpusError, match="no file named 'test_sent_emo.csv'"):
        parse_meld(tmp_path)
    assert len(parse_meld(tmp_path, splits=("train", "dev"))) == 7
    shutil.rmtree(tmp_path / "MELD.Raw" / "dev" / "dev_splits_complete")
    with pytest.raises(CorpusError, match="no folder named 'dev_splits_complete'"):
        parse_meld(tmp_path, splits=("dev",))


def test_extraction_gives_16k_mono_wavs_and_skips_corrupt_clips(tmp_path):
    make_meld(tmp_path)
    utts = parse_meld(tmp_path)
    corrupt = tmp_path / "MELD.Raw" / "train" / "train_splits" / "dia125_utt3.mp4"
    bad = Utterance("meld-train-dia125_utt3", corrupt, "Ross", "neutral", "meld", {"split": "train"})
    skipped = []
    out = extract_meld_audio([*utts, bad], tmp_path / "wav", skipped=skipped, progress=False)
    assert [u.id for u in out] == [u.id for u in utts]
    assert len(skipped) == 1 and "dia125_utt3.mp4: could not decode the clip" in str(skipped[0])
    for u in out:
        info = sf.info(str(u.path))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert 0.25 < info.duration < 0.4
        assert u.path == tmp_path / "wav" / u.extra["split"] / (u.extra["clip"].rsplit("/", 1)[-1][:-4] + ".wav")
    assert not list((tmp_path / "wav").rglob(".*tmp*"))
    with pytest.raises(CorpusError, match="dia125_utt3"):
        extract_meld_audio([bad], tmp_path / "wav", strict=True, progress=False)
    # A second pass reuses the finished wavs (resume) without decoding again.
    before = {u.path: u.path.stat().st_mtime_ns for u in out}
    for u in utts:
        Path(u.path).write_bytes(b"no longer an mp4")
    again = extract_meld_audio(utts, tmp_path / "wav", progress=False)
    assert {u.path: u.path.stat().st_mtime_ns for u in again} == before


@pytest.mark.parametrize("channels,sr", [(6, 48000), (2, 44100)])
def test_six_channel_and_stereo_aac_decode_to_the_same_mono_16k_tone(tmp_path, channels, sr):
    clip = make_mp4(tmp_path / "clip.mp4", seconds=0.5, channels=channels, sr=sr, freq=440.0)
    out = extract_meld_audio([Utterance("meld-dev-x", clip, "Joey", "joy", "meld", {"split": "dev"})],
                             tmp_path / "wav", progress=False)
    data, rate = sf.read(str(out[0].path))
    assert rate == 16000 and data.ndim == 1
    assert 0.45 < len(data) / rate < 0.6
    # Every channel carries the same 0.3-amplitude tone, so the channel mean keeps its level and pitch.
    assert 0.25 < abs(data).max() < 0.35
    spectrum = abs(np.fft.rfft(data))
    assert abs(np.argmax(spectrum) * rate / len(data) - 440) < 10


def test_prepare_lists_the_known_bad_clips_as_skipped(tmp_path):
    from downstream_tasks.prepare import prepare_task

    truth = make_meld(tmp_path / "raw")
    summary = prepare_task("emotion_meld", tmp_path / "raw", tmp_path / "out", progress=False, verbose=False)
    assert summary["n_utterances"] == len(truth)
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "dia125_utt3" in skipped and "dia110_utt7" in skipped
