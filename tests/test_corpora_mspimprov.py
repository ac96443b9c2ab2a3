"""MSP-IMPROV: Evaluation.txt blocks, name → speaker, NaN dropping, 12 speaker folds."""

import math

import pytest

from downstream_tasks import protocol
from downstream_tasks.corpora.base import CorpusError
from downstream_tasks.corpora.mspimprov import (mspimprov_speaker, parse_mspimprov, parse_name, read_evaluation,
                                                session_partner)
from fixtures_corpora import MSP_SPEAKERS, make_mspimprov, msp_name


def test_blocks_map_to_wavs_with_targets_by_prefix(tmp_path):
    truth = make_mspimprov(tmp_path)
    utts = parse_mspimprov(tmp_path)
    got = {u.id: u for u in utts}
    assert set(got) == {f"mspimprov-{n}" for n in truth}
    for name, t in truth.items():
        u = got[f"mspimprov-{name}"]
        assert u.label is None and u.speaker == t["speaker"]
        assert (u.extra["valence"], u.extra["arousal"], u.extra["dominance"]) == pytest.approx(
            (t["valence"], t["arousal"], t["dominance"]))
        assert u.extra["session"] == t["session"] and u.extra["recording"] == t["recording"]
        assert u.path.name == f"{name}.wav"
    # Blocks without `N:` keep naturalness NaN; the rater lines never leak into the consensus.
    odd = got[f"mspimprov-{msp_name('02H', 'F01', 'T')}"]
    assert math.isnan(odd.extra["naturalness"]) and odd.extra["consensus"] == "happy"
    assert got[f"mspimprov-{msp_name('04S', 'M06', 'P')}"].extra["consensus"] == "no_agreement"


def test_parse_name():
    info = parse_name("MSP-IMPROV-S01A-F01-S-FM01")
    assert info == dict(sentence=1, target_emotion="A", speaker="F01", session=1, recording="S", turn="FM01")
    assert parse_name("MSP-IMPROV-S20N-M06-P-MF12")["speaker"] == "M06"
    with pytest.raises(ValueError):
        parse_name("MSP-IMPROV-S01X-F01-S-FM01")


def test_misspelled_label_file_and_flat_root(tmp_path):
    truth = make_mspimprov(tmp_path, label_name="Evalution.txt", audio_dir=".")
    assert len(parse_mspimprov(tmp_path)) == len(truth)


def test_blocks_without_blank_lines_between_are_still_separate(tmp_path):
    truth = make_mspimprov(tmp_path)
    path = tmp_path / "Evaluation.txt"
    path.write_text(path.read_text().replace("\n\n", "\n").replace("\n", "\r\n"))
    assert set(read_evaluation(path)) == set(truth)


def test_nan_targets_are_dropped_and_reported(tmp_path):
    nan_name = msp_name("01A", "M02", "S")
    truth = make_mspimprov(tmp_path, nan_for=(nan_name,))
    skipped = []
    utts = parse_mspimprov(tmp_path, skipped=skipped, strict=True)  # NaN is data, not damage: no raise
    assert len(utts) == len(truth) - 1 and f"mspimprov-{nan_name}" not in {u.id for u in utts}
    assert len(skipped) == 1 and "NaN valence" in str(skipped[0])
    assert math.isnan(read_evaluation(tmp_path / "Evaluation.txt")[nan_name]["valence"])


def test_twelve_folds_test_one_speaker_and_validate_on_the_partner(tmp_path):
    make_mspimprov(tmp_path)
    spec = protocol.get_task("emotion_mspimprov")
    utts, _ = protocol.apply_labels(spec, parse_mspimprov(tmp_path))
    folds = protocol.assign_folds(spec, utts)  # raises on speaker overlap
    assert len(folds) == 12
    ordered = sorted(MSP_SPEAKERS)
    for k, name in enumerate(folds):
        speakers = {s: {u.speaker for u, x in zip(utts, folds[name]) if x == s} for s in ("train", "dev", "test")}
        assert speakers["test"] == {ordered[k]}
        assert speakers["dev"] == {("M" if ordered[k][0] == "F" else "F") + ordered[k][1:]}
        assert len(speakers["train"]) == 10
    with pytest.raises(ValueError, match="fold 13 needs 13 speakers"):
        mspimprov_speaker(utts, 12)


def test_session_partner():
    assert session_partner("F03") == "M03" and session_partner("M06") == "F06"
    with pytest.raises(ValueError):
        session_partner("X03")


def test_missing_wav_is_skipped_or_strict_raises(tmp_path):
    make_mspimprov(tmp_path)
    name = msp_name("03N", "F04", "R")
    (tmp_path / "Audio" / "session4" / "S03N" / "R" / f"{name}.wav").unlink()
    skipped = []
    utts = parse_mspimprov(tmp_path, skipped=skipped)
    assert f"mspimprov-{name}" not in {u.id for u in utts}
    assert len(skipped) == 1 and name in str(skipped[0])
    with pytest.raises(CorpusError, match=f"Evaluation.txt: {name}: no audio file"):
        parse_mspimprov(tmp_path, strict=True)


@pytest.mark.parametrize("old, new, message", [
    ("UTD-IMPROV-S01A-F01-S-FM01.avi; A;", "UTD-IMPROV-S01A-F01-S-FM01.avi; Q;", r"line 1: unknown consensus code 'Q'"),
    ("UTD-IMPROV-S01A-F01-S-FM01.avi;", "UTD-IMPROV-S01A-F01-S-FM01.mp4;", r"line 1: malformed block header"),
    ("UTD-IMPROV-S01A-F01-S-FM01.avi;", "Clip S01A-F01-S-FM01.avi;", r"line 1: block does not start with"),
    ("UTD-IMPROV-S01A-F01-S-FM01.avi;", "UTD-IMPROV-S01A-F1-S-FM01.avi;", r"line 1: unexpected utterance name"),
    ("A:2.000000; V:1.000000", "A:2.000000; Z:1.000000", r"line 1: unexpected field 'Z:1.000000'"),
    ("A:2.000000; V:1.000000", "A:2.000000; V:7.000000", r"line 1: 'V:7.000000' outside \[1.0, 5.0\]"),
    ("A:2.000000; V:1.000000", "A:2.000000; V:high", r"line 1: non-numeric value"),
    ("A:2.000000; V:1.000000; D:3.000000 ;", "A:2.000000; V:1.000000;", r"line 1: no value for \['dominance'\]"),
])
def test_malformed_evaluation_names_file_and_line(tmp_path, old, new, message):
    make_mspimprov(tmp_path)
    path = tmp_path / "Evaluation.txt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(CorpusError, match=r"Evaluation\.txt: " + message):
        parse_mspimprov(tmp_path)


def test_wrong_layout(tmp_path):
    make_mspimprov(tmp_path)
    name = msp_name("01A", "F02", "S")
    wav = tmp_path / "Audio" / "session2" / "S01A" / "S" / f"{name}.wav"
    wrong = tmp_path / "Audio" / "session2" / "S01A" / "T" / f"{name}.wav"
    wrong.parent.mkdir(parents=True, exist_ok=True)
    wav.rename(wrong)
    with pytest.raises(CorpusError, match=rf"{name}\.wav: expected under session2/S01A/S/"):
        parse_mspimprov(tmp_path)
    (tmp_path / "Evaluation.txt").unlink()
    with pytest.raises(CorpusError, match="no Evaluation.txt or Evalution.txt"):
        parse_mspimprov(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "Evaluation.txt").write_text("\n\n")
    with pytest.raises(CorpusError, match="no evaluation blocks"):
        parse_mspimprov(empty)


def test_prepare_writes_targets_and_twelve_folds(tmp_path):
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.prepare import prepare_task

    truth = make_mspimprov(tmp_path / "raw")
    prepare_task("emotion_mspimprov", tmp_path / "raw", tmp_path / "out", progress=False, verbose=False)
    manifest = read_manifest(tmp_path / "out")
    assert len(manifest.rows) == len(truth) and len(manifest.fold_names) == 12
    for r in manifest.rows:
        t = truth[r.id[len("mspimprov-"):]]
        assert r.targets == pytest.approx({k: t[k] for k in ("valence", "arousal", "dominance")})
