"""One-folder classifiers: `care-superb export-classifier`, `EmotionClassifier.from_pretrained`, and
`care-superb predict` on the exported folder giving the run's own predictions."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

import faults
from care_superb import EmotionClassifier, predict
from care_superb.export_classifier import main as export_main
from fixtures_share import demo_run


@pytest.fixture(scope="module")
def care_run(demo_cafe, tmp_path_factory):
    return demo_run(demo_cafe, tmp_path_factory, "care")


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_export_writes_config_weights_and_card(care_run, tmp_path):
    out = tmp_path / "clf"
    export_main([str(care_run.run), "--out", str(out)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "care-superb-classifier" and cfg["task"] == "emotion_cafe" and cfg["fold"] == "fold1"
    assert cfg["labels"] == ["neutral", "anger", "disgust", "happiness", "fear", "surprise", "sadness"]
    assert cfg["upstream"]["hub"] == "care" and cfg["upstream"]["ckpt"] == str(care_run.care)
    assert not cfg["upstream"]["embedded"]
    assert cfg["probe"] == {"input_dim": 64, "hidden": 256, "n_outputs": 7, "dropout": 0.0}
    assert len(cfg["featurizer"]["layer_weights"]) == 13 and abs(sum(cfg["featurizer"]["layer_weights"]) - 1) < 1e-5
    assert cfg["audio"] == {"sample_rate": 16000, "max_seconds": 30, "min_seconds": 1, "batch_size": 8}
    results = json.loads((care_run.run / "results.json").read_text())
    assert cfg["metrics"]["test"]["metrics"] == results["test"]["metrics"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["featurizer.weights", "probe.mlp.0.bias", "probe.mlp.0.weight",
                                    "probe.mlp.3.bias", "probe.mlp.3.weight"]
    card = (out / "README.md").read_text()
    for needle in ("- s3prl", "- speech-emotion-recognition", "- care", "emotion_cafe", "fold1",
                   "Intended use and limits", f"{results['test']['metrics']['weighted_f1']:.4f}", "\"lr\""):
        assert needle in card, needle


def test_exported_folder_predicts_as_the_run(care_run, tmp_path):
    out = tmp_path / "clf"
    export_main([str(care_run.run), "--out", str(out)])
    wavs = sorted(care_run.audio.rglob("*.wav"))[:3]
    from_run = EmotionClassifier.from_pretrained(care_run.run).predict(wavs)
    exported = EmotionClassifier.from_pretrained(out)
    assert exported.predict(wavs) == from_run
    one = exported.predict(str(wavs[0]))
    assert one.label in exported.config.labels and set(one.probabilities) == set(exported.config.labels)
    assert abs(sum(one.probabilities.values()) - 1) < 1e-5
    pred = tmp_path / "pred.csv"
    predict.main([str(out), "--manifest", str(care_run.manifest), "--split", "test", "--out", str(pred),
                  "--no-progress"])
    runner = read_csv(care_run.run / "test_fold1_predictions.csv")
    assert [(r["id"], r["pred"]) for r in read_csv(pred)] == [(r["id"], r["pred"]) for r in runner]


def test_include_upstream_makes_the_folder_self_contained(care_run, tmp_path):
    care = shutil.copytree(care_run.care, tmp_path / "care_copy")
    wav = sorted(care_run.audio.rglob("*.wav"))[0]
    out = tmp_path / "clf"
    export_main([str(care_run.run), "--out", str(out), "--include-upstream", "--upstream-ckpt", str(care)])
    expected = EmotionClassifier.from_pretrained(care_run.run).predict(wav)
    shutil.rmtree(care)  # the recorded upstream folder is gone: the embedded weights are used
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["upstream"]["embedded"] and cfg["upstream"]["care_config"]
    loaded = EmotionClassifier.from_pretrained(out)
    assert loaded.predict(wav) == expected
    loaded.save_pretrained(tmp_path / "again")  # saving a loaded self-contained classifier keeps it so
    assert EmotionClassifier.from_pretrained(tmp_path / "again").predict(wav) == expected


def test_predict_accepts_waveforms_of_any_length(care_run):
    clf = EmotionClassifier.from_pretrained(care_run.run)
    x = faults.speech_like(0.3)  # shorter than the 1 s minimum: padded as in training
    p = clf.predict(x)
    assert p.label in clf.config.labels
    both = clf.predict([x, x])  # one batch of two: equal up to float rounding of batched kernels
    for q in both:
        assert q.label == p.label and q.probabilities == pytest.approx(p.probabilities, abs=1e-6)


def test_egemaps_classifier_folder_reproduces_evaluate(demo_cafe, tmp_path_factory, tmp_path):
    """An upstream without weights: the folder records `egemaps` and holds the probe alone."""
    run = demo_run(demo_cafe, tmp_path_factory, "egemaps")
    out = tmp_path / "clf"
    export_main([str(run.run), "--out", str(out)])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["upstream"]["hub"] == "egemaps" and cfg["upstream"]["ckpt"] is None
    assert cfg["featurizer"]["layer_num"] == 1 and cfg["probe"]["input_dim"] == 25
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(k.startswith("probe.") for k in f.keys())
    pred = tmp_path / "pred.csv"
    predict.main([str(out), "--manifest", str(run.manifest), "--split", "test", "--out", str(pred), "--no-progress"])
    runner = read_csv(run.run / "test_fold1_predictions.csv")
    assert [(r["id"], r["pred"]) for r in read_csv(pred)] == [(r["id"], r["pred"]) for r in runner]
    with pytest.raises(SystemExit):  # nothing to embed: refused, and nothing written
        export_main([str(run.run), "--out", str(tmp_path / "clf2"), "--include-upstream"])
    assert not (tmp_path / "clf2").exists()
