"""The sweep runner: resume after a kill, corrupt cache shards, a file the upstream cannot read,
fallback to the stock runner, and a table rebuilt from the folder alone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SWEEP_STEPS as STEPS
from sweep.runner import SweepConfig, choose_path, pad_mode_for, run_sweep

ROOT = Path(__file__).resolve().parent.parent


def _cells(out: Path):
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/*/*/seed*/results.json")}


def test_fallback_rules():
    base = dict(tasks=["emotion_cafe"], upstreams=["wavlm"])
    assert choose_path(SweepConfig(**base)) == ("fast", None)
    path, why = choose_path(SweepConfig(featurizer_normalize=True, **base))
    assert path == "stock" and "layer norm" in why
    path, why = choose_path(SweepConfig(upstream_trainable=True, **base))
    assert path == "stock" and "fine-tuned" in why
    cfg = SweepConfig(**base)
    assert pad_mode_for(True, cfg) == "zero" and pad_mode_for(False, cfg) == "alone"
    assert pad_mode_for(True, SweepConfig(pad_mode="alone", **base)) == "alone"


def test_kill_resume_corrupt_shard_and_bad_file(demo_cafe_copy, tmp_path, capsys):
    corpus = demo_cafe_copy
    out = tmp_path / "runs"
    argv = ["--tasks", "emotion_cafe", "--upstreams", f"care:{corpus / 'tiny_care'}", "--seeds", "3",
            "--folds", "fold1", "--out", str(out), "--data", str(corpus / "data"), "--devices", "cpu",
            "--no-plots"] + [x for s in STEPS for x in ("-o", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sweep.runner", *argv], cwd=str(ROOT), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _cells(out) and proc.poll() is None:
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the sweep we started, and nothing else
        proc.wait()
    first = _cells(out)
    assert 1 <= len(first) <= 3, "the sweep should have finished some cells before the kill"

    # swap two utterance keys in a cache shard (tensors intact) and make one audio file unreadable
    # before resuming: the resumed cells must not train on each other's features
    import faults

    [shard, *_] = sorted((out / "cache").glob("*/*/shard-*.safetensors"))
    faults.swap_safetensors_metadata_items(shard, "keys", 0, 1)
    bad = sorted((corpus / "demo").rglob("*.wav"))[0]
    bad.write_bytes(b"RIFF garbage, not a wave file")
    capsys.readouterr()
    summary = run_sweep(SweepConfig(tasks=["emotion_cafe"], upstreams=[f"care:{corpus / 'tiny_care'}"], seeds=3,
                                    folds=["fold1"], out=str(out), data=str(corpus / "data"), devices=["cpu"],
                                    overrides=STEPS, plots=False))
    err = capsys.readouterr().err
    assert summary["skipped_finished"] == len(first) and summary["ran"] == 3 - len(first)
    assert not summary["failed"]
    assert "corrupt shard" in err and "checksum mismatch" in err
    assert "failed on" in err and bad.stem in err
    cells = _cells(out)
    assert len(cells) == 3 and all(c["status"] == "done" for c in cells.values())
    for name, data in first.items():
        assert cells[name]["started"] == data["started"]  # finished cells were not run again
    for name in set(cells) - set(first):
        assert any(bad.stem in s for s in cells[name]["skipped_utterances"])
    table = (out / "table.md").read_text()
    assert "| CaFE |" in table and "3 cells" in table
    assert "skipped (upstream failed on them)" in table  # never silently dropped
    assert json.loads((out / "cache_failures.json").read_text())

    # a third run has nothing to do; the table is rebuilt from the folder alone
    summary = run_sweep(SweepConfig(tasks=["emotion_cafe"], upstreams=[f"care:{corpus / 'tiny_care'}"], seeds=3,
                                    folds=["fold1"], out=str(out), data=str(corpus / "data"), devices=["cpu"],
                                    overrides=STEPS, plots=False, table=False))
    assert summary["ran"] == 0
    from sweep.table import main as table_main

    (out / "table.md").unlink()
    table_main([str(out), "--no-plots"])
    assert (out / "table.md").read_text() == table


def test_parallel_jobs_give_the_same_cells_as_one_job(demo_cafe, tmp_path):
    corpus = demo_cafe
    """--jobs 2 (two CPU workers) must not change any cell: same seeds, same data order, same metrics."""
    common = dict(tasks=["emotion_cafe"], upstreams=[f"care:{corpus / 'tiny_care'}"], seeds=1, folds=["fold1", "fold2"],
                  data=str(corpus / "data"), cache=str(tmp_path / "cache"), devices=["cpu"], overrides=STEPS,
                  plots=False, table=False)
    one = run_sweep(SweepConfig(out=str(tmp_path / "one"), jobs=1, **common))
    two = run_sweep(SweepConfig(out=str(tmp_path / "two"), jobs=2, **common))
    assert one["ran"] == two["ran"] == 2 and not one["failed"] and not two["failed"]
    a = {p.relative_to(tmp_path / "one"): json.loads(p.read_text())
         for p in (tmp_path / "one").glob("*/*/*/seed*/results.json")}
    b = {p.relative_to(tmp_path / "two"): json.loads(p.read_text())
         for p in (tmp_path / "two").glob("*/*/*/seed*/results.json")}
    assert a.keys() == b.keys() and len(a) == 2
    for key in a:
        assert a[key]["metrics"] == b[key]["metrics"], key


def test_upstream_names_and_labels(demo_cafe, tmp_path):
    from sweep.cells import UpstreamSpec
    from sweep.runner import ConfigError, parse_upstreams

    care = demo_cafe / "tiny_care"
    named = UpstreamSpec.parse(f"init=care:{care}")
    assert (named.hub, named.label, named.ckpt) == ("care", "init", str(care.resolve()))
    assert UpstreamSpec.parse(f"care:{care}").label == "tiny_care"  # a CARE folder: its name
    assert UpstreamSpec.parse(f"care_acoustic:{care}").label == "tiny_care (acoustic+common)"
    (tmp_path / "WavLM-Base.pt").write_bytes(b"x")
    assert UpstreamSpec.parse(f"wavlm_local:{tmp_path / 'WavLM-Base.pt'}").label == "WavLM-base"
    assert [UpstreamSpec.parse(u).label for u in ("hubert_local", "fbank", "mfcc", "egemaps", "compare")] == [
        "HuBERT-base", "FBANK", "MFCC", "eGeMAPS", "ComParE"]
    with pytest.raises(ConfigError, match="same table label; name them"):
        parse_upstreams(["wavlm_base", f"wavlm_local:{tmp_path / 'WavLM-Base.pt'}"])


def test_fbank_is_refused_as_degenerate(demo_cafe, tmp_path, capsys):
    """s3prl's fbank normalises every utterance's frames, so its time-means are the same vector for every
    utterance: the sweep refuses its cells and says why; --allow-degenerate runs them, marked."""
    common = dict(tasks=["emotion_cafe"], upstreams=["fbank"], seeds=1, folds=["fold1"], out=str(tmp_path / "runs"),
                  data=str(demo_cafe / "data"), devices=["cpu"], overrides=STEPS, plots=False)
    summary = run_sweep(SweepConfig(**common))
    err = capsys.readouterr().err
    assert summary["ran"] == 0 and len(summary["refused"]) == 1
    msg = summary["refused"][0]
    assert "FBANK (fbank) refused" in msg and "normalises each utterance's frames" in msg
    assert "averages frames over time" in msg and "--allow-degenerate" in msg and msg in err
    assert "refused: upstream FBANK" in (tmp_path / "runs" / "table.md").read_text()
    with pytest.raises(SystemExit):
        from sweep.runner import main

        main(["--tasks", "emotion_cafe", "--upstreams", "fbank", "--seeds", "1", "--folds", "fold1", "--out",
              str(tmp_path / "runs"), "--data", str(demo_cafe / "data"), "--devices", "cpu", "--no-plots",
              *[x for s in STEPS for x in ("-o", s)]])

    summary = run_sweep(SweepConfig(allow_degenerate=True, **common))
    assert summary["ran"] == 1 and not summary["failed"] and not summary["refused"]
    [cell] = _cells(tmp_path / "runs").values()
    assert cell["degenerate"]["spread_ratio"] < 1e-6
    assert "FBANK ‡ WF1" in (tmp_path / "runs" / "table.md").read_text()


def test_daicwoz_seeds_redraw_the_segments():
    """DAIC-WOZ's folds are draws of the random 10 s segments: seed i runs on draw i, so --seeds N
    gives N different draws (not N seeds on one draw)."""
    from downstream_tasks.protocol import get_task
    from sweep.cells import UpstreamSpec, expand_cells

    spec = get_task("depression_daicwoz")
    runs = {"depression_daicwoz": spec.runs_of(spec.fold_names, [0, 1, 2])}
    cells = expand_cells(["depression_daicwoz"], runs, [UpstreamSpec(hub="fbank", key="fbank")])
    assert [(c.fold, c.seed) for c in cells] == [("fold1", 0), ("fold2", 1), ("fold3", 2)]


def test_a_cell_failing_on_its_config_says_fix_not_rerun(demo_cafe, tmp_path, capsys):
    """fp16 autocast cannot be replayed on the cache: the cell fails on its configuration, and the
    sweep says to fix it instead of "rerun the same command" (which would fail the same way)."""
    summary = run_sweep(SweepConfig(tasks=["emotion_cafe"], upstreams=["fbank"], seeds=1, folds=["fold1"],
                                    out=str(tmp_path / "runs"), data=str(demo_cafe / "data"), devices=["cpu"],
                                    overrides=STEPS + ["config.runner.fp16=True"], allow_degenerate=True,
                                    plots=False, table=False))
    err = capsys.readouterr().err
    assert len(summary["failed"]) == 1 and "fp16" in summary["failed"][0]
    assert "failed on their configuration" in err and "rerun the same command" not in err
    [cell] = _cells(tmp_path / "runs").values()
    assert cell["status"] == "failed" and cell["error_kind"] == "config"


def test_overrides_reach_the_cache_crop(demo_cafe, tmp_path):
    """`-o ...datarc.max_seconds=...` changes what the stock runner crops, so the fast path's cache must
    crop the same: the plan takes the task config as the cells parse it, overrides included."""
    from sweep.runner import plan_sweep

    common = dict(tasks=["emotion_cafe"], upstreams=["fbank"], seeds=1, folds=["fold1"], data=str(demo_cafe / "data"),
                  devices=["cpu"], plots=False, table=False)
    default = plan_sweep(SweepConfig(out=str(tmp_path / "a"), overrides=STEPS, **common))
    assert {(j.max_seconds, j.min_seconds) for j in default.todo} == {(30, 1)}
    cropped = plan_sweep(SweepConfig(out=str(tmp_path / "b"), **common, overrides=[
        *STEPS, "config.downstream_expert.datarc.max_seconds=0.5", "config.downstream_expert.datarc.min_seconds=0.25"]))
    assert {(j.max_seconds, j.min_seconds) for j in cropped.todo} == {(0.5, 0.25)}
