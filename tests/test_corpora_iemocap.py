"""IEMOCAP parser and session folds on a fake `IEMOCAP_full_release/` tree."""

from collections import Counter

import pytest

from downstream_tasks import protocol
from downstream_tasks.corpora.base import CorpusError
from downstream_tasks.corpora.iemocap import KNOWN_CODES, iemocap_session, parse_iemocap, speaker_of
from fixtures_corpora import make_iemocap


def test_parses_every_top_level_block_with_speaker_from_last_field(tmp_path):
    truth = make_iemocap(tmp_path)
    utts = parse_iemocap(tmp_path)
    got = {u.id: u for u in utts}
    assert set(got) == {f"iemocap-{t['id']}" for t in truth}
    for t in truth:
        u = got[f"iemocap-{t['id']}"]
        assert (u.speaker, u.label, u.extra["session"], u.extra["dialog"]) == (
            t["speaker"], t["code"], t["session"], t["dialog"])
        assert u.path.name == f"{t['id']}.wav" and u.path.parent.name == t["dialog"]
    # The male turn of a female-worn dialog belongs to the male speaker.
    assert got["iemocap-Ses01F_impro01_M003"].speaker == "Ses01M"
    assert got["iemocap-Ses03F_script01_1b_FXX0"].speaker == "Ses03F"
    assert got["iemocap-Ses02M_impro05a_F000"].speaker == "Ses02F"
    # Decoy per-rater files (code `bogus_code`) were never read.
    assert {u.label for u in utts} <= KNOWN_CODES
    assert got["iemocap-Ses01F_impro01_F000"].extra["valence"] == 2.5


@pytest.mark.parametrize("utt, speaker", [("Ses01F_impro01_M003", "Ses01M"), ("Ses05M_script03_2a_F012", "Ses05F"),
                                          ("Ses04F_impro08b_FXX1", "Ses04F")])
def test_speaker_of(utt, speaker):
    assert speaker_of(utt) == speaker


@pytest.mark.parametrize("bad", ["Ses06F_impro01_F000", "Ses01F_impro09_F000", "Ses01F_script01_4_F000",
                                 "Ses01F_impro01_X000"])
def test_speaker_of_rejects_bad_ids(bad):
    with pytest.raises(ValueError):
        speaker_of(bad)


def test_task_label_maps_give_the_four_and_six_classes(tmp_path):
    truth = make_iemocap(tmp_path)
    utts = parse_iemocap(tmp_path)
    four, dropped = protocol.apply_labels(protocol.get_task("emotion_iemocap4"), utts)
    codes4 = Counter(t["code"] for t in truth if t["code"] in ("ang", "hap", "exc", "sad", "neu"))
    assert len(four) == sum(codes4.values())
    assert Counter(u.label for u in four)["happy"] == codes4["hap"] + codes4["exc"]
    assert "fru" in dropped and "xxx" in dropped
    six, _ = protocol.apply_labels(protocol.get_task("emotion_iemocap6"), utts)
    assert {u.label for u in six} == {"neutral", "happy", "sad", "angry", "frustrated", "excited"}
    assert len(six) == sum(1 for t in truth if t["code"] in ("ang", "hap", "exc", "sad", "neu", "fru"))


def test_session_folds_are_speaker_disjoint_and_hold_out_two_sessions(tmp_path):
    make_iemocap(tmp_path)
    spec = protocol.get_task("emotion_iemocap4")
    utts, _ = protocol.apply_labels(spec, parse_iemocap(tmp_path))
    folds = protocol.assign_folds(spec, utts)  # raises SpeakerOverlapError on overlap
    assert list(folds) == [f"fold{k}" for k in range(1, 6)]
    for k, name in enumerate(folds, 1):
        by_split = {s: {u.extra["session"] for u, x in zip(utts, folds[name]) if x == s}
                    for s in ("train", "dev", "test")}
        assert by_split["test"] == {k}
        assert by_split["dev"] == {k % 5 + 1}
        assert by_split["train"] == set(range(1, 6)) - {k, k % 5 + 1}
    # The last fold wraps around: Session 5 tests, Session 1 validates.
    last = iemocap_session(utts, 4)
    assert {u.extra["session"] for u, x in zip(utts, last) if x == "dev"} == {1}


def test_missing_wav_is_skipped_and_reported_or_raises_in_strict_mode(tmp_path):
    make_iemocap(tmp_path, sessions=(1,), missing_wav="Ses01F_impro01_F001")
    skipped = []
    utts = parse_iemocap(tmp_path, sessions=(1,), skipped=skipped)
    assert "iemocap-Ses01F_impro01_F001" not in {u.id for u in utts}
    assert len(skipped) == 1 and "Ses01F_impro01_F001" in str(skipped[0])
    assert skipped[0].path.endswith("Ses01F_impro01_F001.wav")
    with pytest.raises(CorpusError, match="Ses01F_impro01_F001"):
        parse_iemocap(tmp_path, sessions=(1,), strict=True)


def _label_file(tmp_path):
    return tmp_path / "IEMOCAP_full_release" / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"


def test_unknown_code_names_file_and_line(tmp_path):
    make_iemocap(tmp_path, sessions=(1,))
    lf = _label_file(tmp_path)
    lf.write_text(lf.read_text().replace("\tang\t", "\tangry\t"))
    with pytest.raises(CorpusError, match=r"Ses01F_impro01\.txt.*line \d+: unknown emotion code 'angry'"):
        parse_iemocap(tmp_path, sessions=(1,))


def test_malformed_header_line_names_file(tmp_path):
    make_iemocap(tmp_path, sessions=(1,))
    lf = _label_file(tmp_path)
    lf.write_text(lf.read_text().replace("[2.5000, 3.0000, 2.0000]", "[2.5000 3.0000]", 1))
    with pytest.raises(CorpusError, match=r"Ses01F_impro01\.txt: line \d+: malformed block header"):
        parse_iemocap(tmp_path, sessions=(1,))


def test_missing_label_folder_and_wrong_layout(tmp_path):
    make_iemocap(tmp_path, sessions=(1, 2))
    with pytest.raises(CorpusError, match="Session3.*missing label folder"):
        parse_iemocap(tmp_path)
    with pytest.raises(CorpusError, match="no Session1 folder"):
        parse_iemocap(tmp_path / "IEMOCAP_full_release" / "Session1" / "dialog")


def test_utterance_under_wrong_session_is_refused(tmp_path):
    make_iemocap(tmp_path, sessions=(1,))
    lf = _label_file(tmp_path)
    lf.write_text(lf.read_text().replace("Ses01F_impro01_M003", "Ses02F_impro01_M003"))
    with pytest.raises(CorpusError, match="Ses02F_impro01_M003 listed under Session1"):
        parse_iemocap(tmp_path, sessions=(1,))


def test_prepare_writes_a_manifest_with_five_session_folds(tmp_path):
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.prepare import prepare_task

    truth = make_iemocap(tmp_path / "raw")
    summary = prepare_task("emotion_iemocap4", tmp_path / "raw", tmp_path / "out", progress=False, verbose=False)
    n4 = sum(t["code"] in ("ang", "hap", "exc", "sad", "neu") for t in truth)
    assert summary["n_utterances"] == n4 and summary["n_skipped"] == 0
    manifest = read_manifest(tmp_path / "out")
    assert len(manifest.rows) == n4 and manifest.fold_names == [f"fold{k}" for k in range(1, 6)]
    row = next(r for r in manifest.rows if r.id == "iemocap-Ses01F_impro01_M003")
    assert (row.speaker, row.label, row.folds["fold1"], row.folds["fold5"]) == ("Ses01M", "angry", "test", "dev")
