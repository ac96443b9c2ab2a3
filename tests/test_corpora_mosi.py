"""CMU-MOSI parser, binary labels and the SDK standard folds on a fake `Raw/` tree."""

import pytest

from downstream_tasks import protocol
from downstream_tasks.corpora import mosi_folds
from downstream_tasks.corpora.base import CorpusError, Utterance
from downstream_tasks.corpora.mosi import mosi_standard, parse_mosi, sentiment_class
from fixtures_corpora import make_mosi


def test_segments_parse_with_underscored_video_ids(tmp_path):
    truth = make_mosi(tmp_path)
    utts = parse_mosi(tmp_path)
    got = {u.id: u for u in utts}
    assert set(got) == {t["id"] for t in truth}  # the unlabelled I5y0__X72p0_99.wav is ignored
    for t in truth:
        u = got[t["id"]]
        assert (u.extra["video"], u.extra["segment"], u.extra["score"], u.speaker) == (
            t["video"], t["segment"], t["score"], t["video"])
        assert u.label == ("negative" if t["score"] < 0 else "positive")
        assert u.path.name == f"{t['video']}_{t['segment']}.wav"
    assert got["mosi-I5y0__X72p0_12"].label == "positive"  # score 0.0
    assert got["mosi-zhpQhgha_KU_1"].label == "negative"  # score -0.2
    assert got["mosi-_dI--eQ6qVU_2"].extra["video"] == "_dI--eQ6qVU"


def test_sentiment_threshold():
    assert [sentiment_class(s) for s in (-3.0, -0.001, 0.0, 3.0)] == ["negative", "negative", "positive", "positive"]


def test_sdk_fold_lists_have_the_published_sizes():
    tr, va, te = mosi_folds.STANDARD_TRAIN_FOLD, mosi_folds.STANDARD_VALID_FOLD, mosi_folds.STANDARD_TEST_FOLD
    assert (len(tr), len(va), len(te)) == (52, 10, 31)
    assert len(set(tr) | set(va) | set(te)) == 93
    assert all(len(v) == 11 for v in (*tr, *va, *te))
    assert "_dI--eQ6qVU" in va and "I5y0__X72p0" in tr and "c7UH_rxdZv4" in te


def test_standard_fold_rule(tmp_path):
    make_mosi(tmp_path)
    spec = protocol.get_task("sentiment_mosi")
    utts, _ = protocol.apply_labels(spec, parse_mosi(tmp_path))
    folds = protocol.assign_folds(spec, utts)
    split = dict(zip((u.id for u in utts), folds["fold1"]))
    assert split["mosi-I5y0__X72p0_1"] == "train" and split["mosi-6_0THN4chvY_1"] == "train"
    assert split["mosi-_dI--eQ6qVU_1"] == "dev"
    assert split["mosi-zhpQhgha_KU_4"] == "test" and split["mosi-tmZoasNr4rU_1"] == "test"
    stranger = Utterance("mosi-notAVideo01_1", tmp_path / "x.wav", "notAVideo01", "positive", "mosi",
                         {"video": "notAVideo01"})
    with pytest.raises(CorpusError, match="'notAVideo01' is in none of the CMU-MultimodalSDK standard folds"):
        mosi_standard([stranger], 0)


def test_missing_wav_is_skipped_or_strict_raises(tmp_path):
    make_mosi(tmp_path, missing_wav="2iD-tVS8NPw_3")
    skipped = []
    utts = parse_mosi(tmp_path, skipped=skipped)
    assert "mosi-2iD-tVS8NPw_3" not in {u.id for u in utts}
    assert len(skipped) == 1 and skipped[0].path.endswith("2iD-tVS8NPw_3.wav")
    with pytest.raises(CorpusError, match="2iD-tVS8NPw_3"):
        parse_mosi(tmp_path, strict=True)


def _labels(tmp_path):
    return tmp_path / "Raw" / "Labels" / "OpinionLevelSentiment.csv"


@pytest.mark.parametrize("bad_line, message", [
    ("1.0,2.0,I5y0__X72p0,5", r"line 11: expected 5 fields"),
    ("1.0,2.0,I5y0__X72p0,5,strong", r"line 11: non-numeric"),
    ("1.0,2.0,I5y0__X72p0,5,3.5", r"line 11: sentiment 3.5 outside"),
    ("1.0,2.0,I5y0__X72p0,1,1.0", r"duplicate label row for I5y0__X72p0_1"),
])
def test_malformed_label_rows_name_the_file(tmp_path, bad_line, message):
    make_mosi(tmp_path)
    _labels(tmp_path).write_text(_labels(tmp_path).read_text() + bad_line + "\n")
    with pytest.raises(CorpusError, match=r"OpinionLevelSentiment\.csv.*" + message):
        parse_mosi(tmp_path)


def test_wrong_layout(tmp_path):
    make_mosi(tmp_path)
    _labels(tmp_path).unlink()
    with pytest.raises(CorpusError, match="no Labels/OpinionLevelSentiment.csv"):
        parse_mosi(tmp_path)
    make_mosi(tmp_path / "copy")
    (tmp_path / "copy" / "Raw" / "Labels" / "OpinionLevelSentiment.csv").rename(_labels(tmp_path))
    with pytest.raises(CorpusError, match="2 candidates for Audio/WAV_16000/Segmented"):
        parse_mosi(tmp_path)


def test_prepare_writes_the_standard_split(tmp_path):
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.prepare import prepare_task

    truth = make_mosi(tmp_path / "raw")
    prepare_task("sentiment_mosi", tmp_path / "raw", tmp_path / "out", progress=False, verbose=False)
    rows = {r.id: r for r in read_manifest(tmp_path / "out").rows}
    assert set(rows) == {t["id"] for t in truth}
    assert rows["mosi-_dI--eQ6qVU_1"].folds["fold1"] == "dev"
    assert rows["mosi-tmZoasNr4rU_1"].folds["fold1"] == "test"
