"""Every task, from a fixture in its corpus's real layout, through prepare and s3prl's own runner.

prepare → manifest → 2 training steps of the stock runner with a tiny CARE (dev evaluated) →
`-m evaluate` on test → results.json. MELD's mp4 clips are decoded with PyAV: no task skips.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from downstream_tasks import protocol
from downstream_tasks.demo_corpus import DemoConfig, write_demo_corpus
from downstream_tasks.prepare import prepare_task
from fixtures_corpora import (make_daicwoz, make_iemocap, make_meld, make_mosi,
                              make_mspimprov, save_tiny_care, write_tone)

ROOT = Path(__file__).resolve().parent.parent


def make_emodb(root: Path) -> None:
    """Two files per speaker (all 10, so the 6/2/2 rotation has its speakers), EmoDB naming."""
    for speaker in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"):
        for k, (text, letter) in enumerate((("a01", "W"), ("b02", "N"))):
            write_tone(root / "wav" / f"{speaker}{text}{letter}a.wav", freq=150 + 30 * k)


def make_ravdess(root: Path) -> None:
    """Audio-only song files of 23 actors (no Actor_18), two emotions each, 48 kHz."""
    for actor in [a for a in range(1, 25) if a != 18]:
        for emotion in ("01", "05"):
            name = f"03-02-{emotion}-01-01-01-{actor:02d}.wav"
            write_tone(root / f"Actor_{actor:02d}" / name, sr=48000, freq=200 + int(emotion) * 20)


def make_cafe(root: Path) -> None:
    write_demo_corpus(root, seed=3, cfg=DemoConfig(sample_rate=16000, n_sentences=1))


BUILDERS = {
    "emotion_cafe": make_cafe,
    "emotion_emodb": make_emodb,
    "emotion_ravdess_song": make_ravdess,
    "emotion_iemocap4": make_iemocap,
    "emotion_iemocap6": make_iemocap,
    "emotion_meld": make_meld,
    "sentiment_mosi": make_mosi,
    "depression_daicwoz": lambda root: make_daicwoz(root, n_train=3, n_train_dep=1, n_dev=2, n_dev_dep=1),
    "emotion_mspimprov": make_mspimprov,
}


def test_every_task_has_an_end_to_end_fixture():
    assert set(BUILDERS) == set(protocol.TASKS)


@pytest.fixture(scope="module")
def care_tiny(tmp_path_factory):
    return save_tiny_care(tmp_path_factory.mktemp("care_tiny") / "care_tiny")


# Train, then evaluate, in ONE fresh process: the runner's imports cost ~7 s a process, and the two
# stages still go through `run_downstream.py`'s own entry (launcher.main) exactly as from the shell.
_TRAIN_THEN_EVALUATE = """
import json, sys
from care_superb.launcher import main
for argv in json.loads(sys.argv[1]):
    main(argv + ["--device", "cpu"])
"""


def run_train_then_evaluate(train_args, evaluate_args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _TRAIN_THEN_EVALUATE, json.dumps([train_args, evaluate_args])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("task", sorted(BUILDERS))
def test_prepare_train_evaluate(task, care_tiny, tmp_path):
    BUILDERS[task](tmp_path / "raw")
    manifest = tmp_path / "manifest"
    prepare_task(task, tmp_path / "raw", manifest, progress=False, verbose=False)
    expdir = tmp_path / "exp"
    overrides = ",,".join([
        "config.runner.total_steps=2", "config.runner.eval_step=2", "config.runner.save_step=2",
        "config.runner.log_step=1", "config.downstream_expert.datarc.num_workers=0",
        "config.downstream_expert.datarc.batch_size=4", "config.downstream_expert.datarc.eval_batch_size=16",
        # DAIC-WOZ's 10 s segments cropped to 2 s: the same code path, a fifth of the CPU
        "config.downstream_expert.datarc.max_seconds=2",
        f"config.downstream_expert.datarc.manifest_dir='{manifest}'",
    ])
    proc = run_train_then_evaluate(
        ["-m", "train", "-u", "care", "-k", str(care_tiny), "-d", task, "-p", str(expdir), "-o", overrides],
        ["-m", "evaluate", "-e", str(expdir / "dev-best.ckpt")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (expdir / "dev-best.ckpt").is_file()
    results = json.loads((expdir / "results.json").read_text())
    assert results["task"] == task
    metrics = results["test"]["metrics"]
    reference = results["test"]["reference"]
    assert results["test"]["n"] > 0
    assert all(math.isfinite(v) for v in metrics.values()), metrics  # a NaN score is a failure
    if protocol.TASKS[task].kind == "regression":
        targets = protocol.TASKS[task].targets
        assert {f"ccc_{t}" for t in targets} | {"ccc_mean"} <= set(metrics), metrics
        assert all(-1.0 <= metrics[f"ccc_{t}"] <= 1.0 for t in targets), metrics
        assert reference["mean_ccc"] == {t: 0.0 for t in targets}
    else:
        assert {"weighted_f1", "uar", "accuracy"} <= set(metrics), metrics
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("weighted_f1", "uar", "accuracy")), metrics
        labels = protocol.TASKS[task].labels
        assert reference["chance_uar"] == 1 / len(labels) and reference["majority_class"] in labels
        assert all(0.0 <= reference[k] <= 1.0 for k in ("majority_weighted_f1", "majority_accuracy", "majority_uar"))
    if task == "depression_daicwoz":
        part = results["test"]["participant"]
        assert part["n_participants"] == 2  # the fixture's two dev interviews, one decision each
        for how in ("vote", "mean_prob"):
            assert all(0.0 <= part[how][k] <= 1.0 for k in ("f1_depressed", "macro_f1", "uar")), part
