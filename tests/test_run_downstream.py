"""The launcher end to end: resume with -e, a stock upstream in the same pipeline, no silent random CARE."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_corpora import prepare_demo_cafe

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    base = tmp_path_factory.mktemp("launcher_corpus")
    return prepare_demo_cafe(base / "raw", base / "manifest", seed=1)


def run(args, home, **env):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HOME": str(home), **env}
    full_env.pop("CARE_CKPT", None)
    full_env.update(env)
    return subprocess.run([sys.executable, "run_downstream.py", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=600)


def overrides(manifest, steps):
    return ",,".join([
        f"config.runner.total_steps={steps}", "config.runner.eval_step=2", "config.runner.save_step=2",
        "config.runner.log_step=1", "config.downstream_expert.datarc.num_workers=0",
        "config.downstream_expert.datarc.batch_size=8", "config.downstream_expert.datarc.test_fold='fold2'",
        f"config.downstream_expert.datarc.manifest_dir='{manifest}'",
    ])


def test_stock_upstream_trains_and_resumes_with_e(manifest, tmp_path):
    """`-u fbank_no_cmvn` (stock, no weights) on a project task; then `-e` continues the experiment."""
    expdir = tmp_path / "exp"
    first = run(["-m", "train", "-u", "fbank_no_cmvn", "-d", "emotion_cafe", "-p", str(expdir),
                 "-o", overrides(manifest, 2)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (expdir / "states-2.ckpt").is_file() and not (expdir / "states-4.ckpt").exists()
    # Resume: s3prl takes args and config from the checkpoint; -o raises the step budget.
    resumed = run(["-m", "train", "-e", str(expdir / "states-2.ckpt"),
                   "-o", "config.runner.total_steps=4"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resume from" in resumed.stdout + resumed.stderr
    assert (expdir / "states-4.ckpt").is_file()
    results = json.loads((expdir / "results.json").read_text())
    assert results["fold"] == "fold2" and results["dev"]["step"] == 4


def test_care_without_weights_stops_and_says_how_to_get_them(manifest, tmp_path):
    out = run(["-m", "train", "-u", "care", "-d", "emotion_cafe", "-p", str(tmp_path / "exp"),
               "-o", overrides(manifest, 2)], tmp_path)
    assert out.returncode != 0
    assert "No CARE weights found" in out.stderr and "convert-authors" in out.stderr
    assert not list((tmp_path / "exp").glob("states-*.ckpt"))
