"""Fold rules, label mapping and the speaker-overlap check of downstream_tasks.protocol."""

import re
from pathlib import Path

import pytest
import yaml

from downstream_tasks import protocol
from downstream_tasks.corpora.base import CorpusError, Utterance
from downstream_tasks.protocol import SpeakerOverlapError, TaskSpec

ROOT = Path(__file__).resolve().parent.parent


def utts(speakers, per_speaker=3, label="a"):
    return [Utterance(f"x-{s}-{i}", Path(f"/data/{s}_{i}.wav"), s, label, "x")
            for s in speakers for i in range(per_speaker)]


def speakers_of(us, splits, split):
    return sorted({u.speaker for u, s in zip(us, splits) if s == split})


def test_speaker_rotation_cafe_folds_are_the_documented_ones():
    spk = [f"{i:02d}" for i in range(12, 0, -1)]  # unsorted on purpose: the rule sorts
    us = utts(spk)
    for k in range(5):
        splits = protocol.speaker_rotation(us, k, n_test=2, n_dev=2)
        sorted_spk = sorted(spk)
        assert speakers_of(us, splits, "test") == sorted_spk[2 * k:2 * k + 2]
        assert speakers_of(us, splits, "dev") == sorted_spk[2 * k + 2:2 * k + 4]
        assert len(speakers_of(us, splits, "train")) == 8


def test_speaker_rotation_is_cyclic_for_the_last_emodb_fold():
    spk = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    splits = protocol.speaker_rotation(utts(spk), 4, n_test=2, n_dev=2)
    assert speakers_of(utts(spk), splits, "test") == ["15", "16"]
    assert speakers_of(utts(spk), splits, "dev") == ["03", "08"]


def test_speaker_rotation_ravdess_23_actors():
    spk = [f"{i:02d}" for i in range(1, 25) if i != 18]
    us = utts(spk)
    splits = protocol.speaker_rotation(us, 4, n_test=4, n_dev=3)
    assert speakers_of(us, splits, "test") == ["17", "19", "20", "21"]
    assert speakers_of(us, splits, "dev") == ["22", "23", "24"]


def test_speaker_rotation_refuses_too_few_speakers():
    with pytest.raises(ValueError, match="4 speakers cannot give fold 1"):
        protocol.speaker_rotation(utts(["a", "b", "c", "d"]), 0, n_test=2, n_dev=2)


def test_overlap_check_names_the_speakers_and_splits():
    us = utts(["s1", "s2", "s3"], per_speaker=2)
    splits = ["train", "test", "dev", "dev", "test", "test"]  # s1 in train+test
    with pytest.raises(SpeakerOverlapError, match=r"train/test: s1") as info:
        protocol.check_speaker_disjoint(us, splits, task="t", fold="fold2")
    assert isinstance(info.value, ValueError)
    assert info.value.overlaps == {("train", "test"): ["s1"]}
    assert "fold2" in str(info.value)


def test_overlap_check_ignores_unused_rows_and_passes_disjoint_folds():
    us = utts(["s1", "s2", "s3"], per_speaker=2)
    protocol.check_speaker_disjoint(us, ["train", "-", "dev", "dev", "test", "test"])


@pytest.fixture
def leaky_task():
    @protocol.register_fold_rule("test_leaky")
    def leaky(utterances, fold, **_):
        # alternating splits put every speaker everywhere
        return [("train", "dev", "test")[i % 3] for i in range(len(utterances))]

    spec = TaskSpec(name="test_leaky_task", corpus="x", parser="nowhere:nothing", labels=("a",),
                    fold_rule="test_leaky", n_folds=2)
    yield spec
    protocol.FOLD_RULES.pop("test_leaky")


def test_assign_folds_raises_on_a_leaky_rule(leaky_task):
    with pytest.raises(SpeakerOverlapError, match="test_leaky_task fold1"):
        protocol.assign_folds(leaky_task, utts(["s1", "s2"], per_speaker=3))


def test_assign_folds_accepts_a_leaky_rule_when_not_speaker_independent(leaky_task):
    from dataclasses import replace

    folds = protocol.assign_folds(replace(leaky_task, speaker_independent=False), utts(["s1", "s2"], 3))
    assert list(folds) == ["fold1", "fold2"]


def test_assign_folds_rejects_empty_split_and_bad_values():
    spec = TaskSpec(name="t", corpus="x", parser="nowhere:nothing", labels=("a",),
                    fold_rule="extra_split", n_folds=1)
    us = utts(["s1", "s2"], per_speaker=1)
    us[0].extra["split"], us[1].extra["split"] = "train", "dev"
    with pytest.raises(ValueError, match="the test split is empty"):
        protocol.assign_folds(spec, us)
    us[1].extra["split"] = "validation"
    with pytest.raises(CorpusError, match=r"s2_0.wav.*validation"):
        protocol.assign_folds(spec, us)


def test_label_map_drops_and_renames_iemocap_codes():
    spec = protocol.get_task("emotion_iemocap4")
    raw = [Utterance(f"i{k}", Path(f"/i{k}.wav"), "Ses01F", code, "iemocap")
           for k, code in enumerate(["ang", "hap", "exc", "sad", "neu", "fru", "xxx", "sur"])]
    kept, dropped = protocol.apply_labels(spec, raw)
    assert [u.label for u in kept] == ["angry", "happy", "happy", "sad", "neutral"]
    assert dropped == {"fru": 1, "xxx": 1, "sur": 1}
    six, _ = protocol.apply_labels(protocol.get_task("emotion_iemocap6"), raw)
    assert [u.label for u in six] == ["angry", "happy", "excited", "sad", "neutral", "frustrated"]


def test_unknown_label_without_map_names_the_file():
    spec = protocol.get_task("emotion_cafe")
    bad = [Utterance("c", Path("/cafe/01-Q-1-1.wav"), "01", "joy", "cafe")]
    with pytest.raises(CorpusError, match=r"01-Q-1-1.wav: label 'joy' is not one of"):
        protocol.apply_labels(spec, bad)


def test_regression_drops_nan_targets_and_needs_all_targets():
    spec = protocol.get_task("emotion_mspimprov")
    ok = Utterance("m1", Path("/m1.wav"), "F01", None, "msp", {"valence": 3.0, "arousal": 2.0, "dominance": 1.0})
    nan = Utterance("m2", Path("/m2.wav"), "F01", None, "msp",
                    {"valence": float("nan"), "arousal": 2.0, "dominance": 1.0})
    kept, dropped = protocol.apply_labels(spec, [ok, nan])
    assert kept == [ok] and dropped == {"NaN target": 1}
    with pytest.raises(CorpusError, match="m3.wav: missing regression target"):
        protocol.apply_labels(spec, [Utterance("m3", Path("/m3.wav"), "F01", None, "msp", {"valence": 1.0})])


def test_registry_has_the_nine_tasks_with_config_and_expert():
    names = {"emotion_iemocap4", "emotion_iemocap6", "emotion_meld", "sentiment_mosi", "depression_daicwoz",
             "emotion_ravdess_song", "emotion_cafe", "emotion_emodb", "emotion_mspimprov"}
    assert set(protocol.TASKS) == names
    for name in names:
        folder = ROOT / "downstream_tasks" / name
        assert (folder / "config.yaml").is_file() and (folder / "expert.py").is_file()


def config_disagreements(name: str) -> list:
    """Every place where a task's config.yaml says something other than its TaskSpec."""
    spec = protocol.get_task(name)
    path = ROOT / "downstream_tasks" / name / "config.yaml"
    text = path.read_text()
    cfg = yaml.safe_load(text)
    datarc, runner = cfg["downstream_expert"]["datarc"], cfg["runner"]
    modelrc = cfg["downstream_expert"].get("modelrc") or {}
    epoch = spec.total_steps(epochs=1, batch_size=datarc["batch_size"])
    wrong = []

    def expect(what, got, want):
        if got != want:
            wrong.append(f"{path}: {what} is {got!r}, the task definition gives {want!r}")

    expect("datarc.task", datarc.get("task"), name)
    expect("datarc.manifest_dir", datarc.get("manifest_dir"), f"data/{name}")
    expect("runner.total_steps", runner.get("total_steps"),
           spec.total_steps(epochs=datarc["epochs"], batch_size=datarc["batch_size"]))
    for key in ("log_step", "eval_step", "save_step"):  # one epoch of the table's train size
        expect(f"runner.{key}", runner.get(key), epoch)
    expect("datarc.test_fold in the task's folds", datarc.get("test_fold") in spec.fold_names, True)
    expect("the folds the config names", re.search(r"test_fold: \S+\s+# fold1 \.\. (fold\d+)", text).group(1),
           spec.fold_names[-1])
    expect("runner.eval_dataloaders", runner.get("eval_dataloaders"), ["dev"])
    expect("modelrc.regression_loss set", "regression_loss" in modelrc, spec.kind == "regression")
    expect("the first comment line's task", text.split(":", 1)[0], f"# {name}")
    return wrong


@pytest.mark.parametrize("name", sorted(protocol.TASKS))
def test_config_yaml_agrees_with_the_task_definition(name):
    assert config_disagreements(name) == []


def test_a_config_that_disagrees_is_caught(monkeypatch):
    spec = protocol.get_task("emotion_emodb")
    monkeypatch.setitem(protocol.TASKS, "emotion_emodb",
                        protocol.TaskSpec(**{**spec.__dict__, "table_train_size": spec.table_train_size + 64,
                                             "n_folds": 6}))
    wrong = config_disagreements("emotion_emodb")
    assert any("runner.total_steps is 550" in w for w in wrong)
    assert any("the folds the config names is 'fold5'" in w for w in wrong)


def test_task_spec_validation_and_lazy_parsers():
    with pytest.raises(ValueError, match="needs labels"):
        TaskSpec(name="t", corpus="x", parser="a:b", fold_rule="r", n_folds=1)
    with pytest.raises(ValueError, match="needs targets"):
        TaskSpec(name="t", corpus="x", parser="a:b", fold_rule="r", n_folds=1, kind="regression")
    with pytest.raises(KeyError, match="unknown task"):
        protocol.get_task("emotion_klingon")
    # A spec whose parser module does not exist is fine until it is used.
    spec = TaskSpec(name="t", corpus="x", parser="no_such_module_xyz:parse", labels=("a",),
                    fold_rule="missing_rule", n_folds=1)
    with pytest.raises(ModuleNotFoundError):
        protocol.get_parser(spec)


def test_corpus_modules_register_their_rules_on_import():
    for name in ("emotion_iemocap4", "emotion_meld", "sentiment_mosi", "depression_daicwoz", "emotion_mspimprov"):
        spec = protocol.get_task(name)
        assert callable(protocol.get_fold_rule(spec))  # a missing parser module fails here


def test_runs_of_pairs_each_seed_with_its_own_draw_only_where_folds_are_draws():
    daic, cafe = protocol.get_task("depression_daicwoz"), protocol.get_task("emotion_cafe")
    assert daic.folds_are_draws and daic.n_folds == 5 and daic.parser_kwargs["seeds"] == (0, 1, 2, 3, 4)
    assert daic.runs_of(daic.fold_names, [0, 1, 2]) == [("fold1", 0), ("fold2", 1), ("fold3", 2)]
    assert daic.runs_of(["fold1", "fold2"], [7, 8, 9]) == [("fold1", 7), ("fold2", 8), ("fold1", 9)]
    assert cafe.runs_of(["fold1", "fold2"], [0, 1]) == [("fold1", 0), ("fold1", 1), ("fold2", 0), ("fold2", 1)]
