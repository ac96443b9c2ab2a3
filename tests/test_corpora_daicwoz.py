"""DAIC-WOZ: split files, transcript repairs, deterministic 10 s segments (6003 / 2097) and the dev rule."""

from collections import Counter

import numpy as np
import pytest
import torch

from care_core.segments import segments_from_str, segments_to_str
from downstream_tasks import protocol
from downstream_tasks.corpora import daicwoz
from downstream_tasks.corpora.base import CorpusError
from downstream_tasks.corpora.daicwoz import (DaicWozConfig, draw_windows, parse_daicwoz,
                                              participant_intervals,
                                              read_interviews, read_transcript)
from fixtures_corpora import (DAIC_OFFSETS, DAIC_ROWS, DAIC_SPEECH, SR, make_daicwoz, write_daic_transcript, write_ramp)


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory):
    """107 train (30 depressed) + 35 dev (12 depressed) interviews of 14 s; 318/321/341/362 misaligned."""
    root = tmp_path_factory.mktemp("daicwoz")
    labels = make_daicwoz(root)
    return root, labels


def test_segment_counts_match_the_table(full_tree):
    root, labels = full_tree
    utts = parse_daicwoz(root)
    per_split = Counter(u.extra["split"] for u in utts)
    assert per_split == {"train": 6003, "dev": 2097}
    assert Counter(u.label for u in utts if u.extra["split"] == "train") == {"depressed": 3000, "not_depressed": 3003}
    per_pid = Counter(u.speaker for u in utts)
    for split, table in labels.items():
        for pid, binary in table.items():
            assert per_pid[str(pid)] == (100 if binary else 39)


def test_segments_are_10s_inside_participant_speech_and_deterministic(full_tree):
    root, _ = full_tree
    interviews = read_interviews(root)
    iv = next(i for i in interviews if i.pid == 301)
    assert iv.intervals == [DAIC_SPEECH[0], DAIC_SPEECH[1]]  # chatter and sync row dropped
    utts = daicwoz.segment_interviews([iv], seeds=(0,))
    assert len(utts) == 100  # 301 is among the first 30 train ids: depressed
    starts = set()
    for u in utts:
        pieces = u.extra["pieces"]
        assert sum(e - s for s, e in pieces) == pytest.approx(10.0, abs=1e-9)
        for s, e in pieces:
            assert any(a - 1e-9 <= s < e <= b + 1e-9 for a, b in DAIC_SPEECH)
        starts.add(pieces[0][0])
    assert len(starts) > 50  # random positions, not one window repeated
    assert any(len(u.extra["pieces"]) == 2 for u in utts)  # windows cross the turn boundary
    again = daicwoz.segment_interviews([iv], seeds=(0,))
    assert [u.extra["pieces"] for u in again] == [u.extra["pieces"] for u in utts]
    other = daicwoz.segment_interviews([iv], seeds=(1,))
    assert [u.extra["pieces"] for u in other] != [u.extra["pieces"] for u in utts]
    # The seed depends on the participant too: same seed, another pid -> other windows.
    twin = next(i for i in interviews if i.pid == 300)
    assert twin.intervals == iv.intervals and twin.pid != iv.pid
    assert ([u.extra["pieces"] for u in daicwoz.segment_interviews([twin], seeds=(0,))][:5]
            != [u.extra["pieces"] for u in utts][:5])


@pytest.mark.parametrize("pid", sorted(DAIC_OFFSETS))
def test_misaligned_transcripts_are_shifted_onto_the_audio(full_tree, pid):
    root, _ = full_tree
    iv = next(i for i in read_interviews(root) if i.pid == pid)
    flat = [t for span in iv.intervals for t in span]
    assert flat == pytest.approx([t for span in DAIC_SPEECH for t in span], abs=1e-3)


def test_dev_rule_uses_one_run_per_fold_and_test_is_dev(full_tree):
    root, _ = full_tree
    spec = protocol.get_task("depression_daicwoz")
    seeds = tuple(10 + 3 * k for k in range(spec.n_folds))  # fold k uses the k-th smallest seed
    utts, _ = protocol.apply_labels(spec, parse_daicwoz(root, seeds=seeds))
    assert len(utts) == len(seeds) * (6003 + 2097)
    folds = protocol.assign_folds(spec, utts)  # speaker check: train and dev participants disjoint
    for k, name in enumerate(spec.fold_names):
        expected = Counter({"train": 6003, "dev": 2097, "-": (len(seeds) - 1) * 8100})
        assert Counter(folds[name]) == +expected  # unary + drops a zero "-" count
        assert {u.extra["run"] for u, s in zip(utts, folds[name]) if s != "-"} == {seeds[k]}
    two = [u for u in utts if u.extra["run"] in seeds[:1]] + parse_daicwoz(root, seeds=(99,))
    assert daicwoz.daicwoz_dev(two, 0, run=99) == daicwoz.daicwoz_dev(two, 1)
    with pytest.raises(ValueError, match="no segments drawn for run 5"):
        daicwoz.daicwoz_dev(two, 0, run=5)
    with pytest.raises(ValueError, match="fold 3 needs 3 drawn runs"):
        daicwoz.daicwoz_dev(two, 2)


def test_sync_markers_interruptions_and_no_ellie(tmp_path):
    rows = [(0.0, 5.0, "Participant", "hello"), (5.5, 6.0, "Ellie", "hi"), (6.0, 6.1, "Participant", "[synching]"),
            (390.0, 400.0, "Participant", "before the interruption"), (410.0, 420.0, "Participant", "during"),
            (425.0, 435.0, "Participant", "after it"), (436.0, 437.0, "Participant", "<SYNC>")]
    path = write_daic_transcript(tmp_path / "373_TRANSCRIPT.csv", rows)
    got = participant_intervals(373, read_transcript(path), 500.0, path)
    assert got == [(390.0, 395.0), (428.0, 435.0)]
    # Without Ellie rows nothing anchors the start, so early participant speech stays.
    no_ellie = [r for r in rows if r[2] != "Ellie"]
    path = write_daic_transcript(tmp_path / "451_TRANSCRIPT.csv", no_ellie)
    assert participant_intervals(451, read_transcript(path), 500.0, path)[0] == (0.0, 5.0)
    # Intervals are clipped to the audio and overlapping rows merged.
    rows = [(1.0, 2.0, "Ellie", "hi"), (3.0, 6.0, "Participant", "a"), (5.0, 8.0, "Participant", "b"),
            (9.0, 30.0, "Participant", "c")]
    path = write_daic_transcript(tmp_path / "300_TRANSCRIPT.csv", rows)
    assert participant_intervals(300, read_transcript(path), 20.0, path) == [(3.0, 8.0), (9.0, 20.0)]


def test_draw_windows_maps_concatenated_positions_back_to_audio():
    cfg = DaicWozConfig(segment_seconds=1.0, sample_rate=10)
    rng = np.random.default_rng(0)
    wins = draw_windows([(0.0, 0.5), (2.0, 2.3), (5.0, 6.0)], 200, rng, cfg)
    for pieces in wins:
        assert sum(e - s for s, e in pieces) == pytest.approx(1.0)
        assert all(e <= 0.5 or s >= 2.0 for s, e in pieces)
    # Both extremes of the 1.8 s concatenation are reachable: offset 0 and offset 0.8 (= audio 5.0 s).
    assert [(0.0, 0.5), (2.0, 2.3), (5.0, 5.2)] in wins
    assert [(5.0, 6.0)] in wins
    short = draw_windows([(1.0, 1.4)], 3, rng, cfg)
    assert short == [[(1.0, 1.4)]] * 3


def test_segment_audio_is_exactly_the_pieces(tmp_path):
    from downstream_tasks.audio import load_audio

    path = write_ramp(tmp_path / "300_AUDIO.wav", seconds=2.0)
    pieces = [(0.5, 0.75), (1.25, 1.5)]
    wav = load_audio(path, segments=segments_from_str(segments_to_str(pieces)), crop_pad=False)
    expected = torch.cat([torch.arange(8000, 12000), torch.arange(20000, 24000)]).float() / 32768
    assert wav.shape == (8000,)
    assert torch.allclose(wav, expected)


def test_missing_interview_parts_are_skipped_or_strict_raises(tmp_path):
    make_daicwoz(tmp_path, n_train=3, n_train_dep=1, n_dev=2, n_dev_dep=1, skip_audio=(301,))
    skipped = []
    utts = parse_daicwoz(tmp_path, skipped=skipped)
    assert "301" not in {u.speaker for u in utts}
    assert len(skipped) == 1 and "301_AUDIO.wav" in str(skipped[0])
    with pytest.raises(CorpusError, match="301_AUDIO.wav"):
        parse_daicwoz(tmp_path, strict=True)
    (tmp_path / "302_P" / "302_AUDIO.wav").write_bytes(b"RIFF\x00\x00garbage")
    skipped = []
    assert "302" not in {u.speaker for u in parse_daicwoz(tmp_path, skipped=skipped)}
    assert any("302_AUDIO.wav: unreadable audio" in str(e) for e in skipped)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("0,1,10", "0,2,10", 1), r"train_split_Depression_AVEC2017\.csv: line 2: PHQ8_Binary must be 0 or 1"),
    (lambda t: t.replace("PHQ8_Binary", "PHQ_Binary"), r"train_split_Depression_AVEC2017\.csv: missing columns \['PHQ8_Binary'\]"),
    (lambda t: t + "300,0,3,1,,,,,,,,\n", r"line 5: participant 300 listed twice"),
])
def test_bad_split_files_name_the_file(tmp_path, edit, message):
    make_daicwoz(tmp_path, n_train=3, n_train_dep=1, n_dev=2, n_dev_dep=1)
    path = tmp_path / "train_split_Depression_AVEC2017.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(CorpusError, match=message):
        read_interviews(tmp_path)


def test_bad_transcripts_name_the_file(tmp_path):
    make_daicwoz(tmp_path, n_train=3, n_train_dep=1, n_dev=2, n_dev_dep=1)
    path = tmp_path / "300_P" / "300_TRANSCRIPT.csv"
    good = path.read_text()
    path.write_text(good.replace("\tEllie\t", "\tInterviewer\t", 1))
    with pytest.raises(CorpusError, match=r"300_TRANSCRIPT\.csv: line 3: unknown speaker 'Interviewer'"):
        read_interviews(tmp_path)
    path.write_text(good.replace("\t", ",", 4))
    with pytest.raises(CorpusError, match=r"300_TRANSCRIPT\.csv: expected TAB-separated header"):
        read_interviews(tmp_path)
    path.write_text(good.replace("1.200\t", "1,2\t", 1))
    with pytest.raises(CorpusError, match=r"300_TRANSCRIPT\.csv: line 4: non-numeric time"):
        read_interviews(tmp_path)


def test_missing_split_file(tmp_path):
    make_daicwoz(tmp_path, n_train=3, n_train_dep=1, n_dev=2, n_dev_dep=1)
    (tmp_path / "dev_split_Depression_AVEC2017.csv").unlink()
    with pytest.raises(CorpusError, match="no dev_split_Depression_AVEC2017.csv"):
        read_interviews(tmp_path)
    assert {i.split for i in read_interviews(tmp_path, splits=("train",))} == {"train"}


def test_fixture_rows_are_what_the_repairs_expect():
    """Guard the fixture itself: chatter precedes Ellie, the sync row sits between the two turns."""
    assert DAIC_ROWS[0][2] == "Participant" and DAIC_ROWS[0][1] < DAIC_ROWS[1][0]
    assert SR == DaicWozConfig().sample_rate


def test_prepare_keeps_every_segment_as_a_10s_manifest_row(tmp_path):
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.prepare import prepare_task

    make_daicwoz(tmp_path / "raw", n_train=4, n_train_dep=1, n_dev=3, n_dev_dep=1)
    summary = prepare_task("depression_daicwoz", tmp_path / "raw", tmp_path / "out", progress=False, verbose=False)
    per_run_train, per_run_dev = 100 + 3 * 39, 100 + 2 * 39
    # five draws, one per fold: the sweep's i-th seed runs fold i+1, so every seed redraws the segments
    assert summary["n_utterances"] == 5 * (per_run_train + per_run_dev)
    manifest = read_manifest(tmp_path / "out")
    assert all(r.duration == pytest.approx(10.0) for r in manifest.rows)
    drawn = []
    for fold in manifest.fold_names:
        used = [r for r in manifest.rows if r.folds[fold] != "-"]
        assert Counter(r.folds[fold] for r in used) == {"train": per_run_train, "dev": per_run_dev}
        drawn.append({(r.speaker, tuple(r.segments[0])) for r in used})
    assert all(drawn[0] != other for other in drawn[1:])
