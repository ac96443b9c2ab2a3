"""The fast path against the stock runner: same seed, same data order -> same probe, same metrics.

Tiny CARE (random weights) on a small demo corpus in CaFE's layout. The stock cell runs
`run_downstream.py -m train` and `-m evaluate` in subprocesses exactly as the sweep's stock
fallback does; the fast cell trains on the feature cache. CARE zeroes padding frames, so the fast
path replays the stock runner's padded batches exactly (pad_mode "zero"); what is left is float
summation order (layer sum then time mean vs time mean then layer sum), ~1e-7 relative, which must
not change a single prediction in a run this short.

Twelve steps of a probe on random tiny-CARE features mostly predict one class, so equal metrics
alone would prove little; the discriminating checks are the losses: every dev evaluation and the
test loss agree to 4 decimals in the log and to 1e-5 in full precision. Replaying the padded
batches matters at that precision: pad_mode "alone" (no replay) already gives 1.9424 where the stock
runner gives 1.9423 at the first evaluation. `benchmarks/sweep_speed.py` compares 5 folds x 2 seeds
of full-length training, where the probe does learn.
"""

import csv
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["config.runner.total_steps=12", "config.runner.eval_step=4", "config.runner.log_step=4",
         "config.runner.save_step=4", "config.downstream_expert.datarc.num_workers=0"]


def _eval_lines(expdir: Path):
    return [line.strip() for line in (expdir / "log.log").read_text().splitlines()
            if line.startswith(("dev ", "test "))]


def _predictions(expdir: Path):
    with open(expdir / "test_fold1_predictions.csv") as f:
        return [tuple(r) for r in csv.reader(f)]


def test_fast_equals_stock(demo_cafe, tmp_path):
    corpus = demo_cafe
    from sweep.runner import SweepConfig, run_sweep

    common = dict(tasks=["emotion_cafe"], upstreams=[f"care:{corpus / 'tiny_care'}"], seeds=1, seed_base=3,
                  folds=["fold1"], data=str(corpus / "data"), overrides=STEPS, devices=["cpu"], plots=False)
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the stock subprocesses: same thread count, same float sums
    try:
        stock = run_sweep(SweepConfig(out=str(tmp_path / "stock"), stock=True, **common))
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    fast = run_sweep(SweepConfig(out=str(tmp_path / "fast"), **common))
    assert not stock["failed"] and not fast["failed"], (stock, fast)

    [s_res] = list((tmp_path / "stock").glob("*/*/*/seed*/results.json"))
    [f_res] = list((tmp_path / "fast").glob("*/*/*/seed*/results.json"))
    s, f = json.loads(s_res.read_text()), json.loads(f_res.read_text())
    assert s["path"] == "stock" and f["path"] == "fast" and f["pad_mode"] == "zero"

    # every dev evaluation during training and the final test: same metrics, same loss to 4 decimals
    # (pad_mode "alone" already differs there: 1.9424 vs 1.9423 in the 4th decimal)
    s_ev, f_ev = _eval_lines(s_res.parent / "s3prl"), _eval_lines(f_res.parent / "s3prl")
    assert len(s_ev) == 4 and s_ev == f_ev
    # the test split on the dev-best weights: same predictions, utterance by utterance
    preds = _predictions(s_res.parent / "s3prl")
    assert preds == _predictions(f_res.parent / "s3prl")
    for k in ("weighted_f1", "uar", "accuracy"):
        assert f["metrics"]["test"][k] == s["metrics"]["test"][k]
    assert f["metrics"]["test"]["loss"] == pytest.approx(s["metrics"]["test"]["loss"], abs=1e-5)
    assert f["best_step"] == s["best_step"]
    # the reference block (chance, train-majority class) comes from the same expert on both paths
    assert f["reference"] == s["reference"] and f["reference"]["chance_uar"] == pytest.approx(1 / 7)
    # learned layer weights (stock: from dev-best.ckpt) agree to float precision
    assert f["layer_weights"] == pytest.approx(s["layer_weights"], abs=1e-6)
    assert max(s["layer_weights"]) > min(s["layer_weights"])  # they did move away from uniform
