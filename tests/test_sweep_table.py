"""Fold/seed aggregation and table rendering on hand-made results.json files."""

import json
from pathlib import Path

import pytest

from care_core import atomic
from sweep.cells import SCHEMA_VERSION, ResultsError, read_results
from sweep.table import collect, main, mean_std, render_csv, render_markdown


def _result(task, key, fold, seed, metrics, *, label=None, status="done", kind="classification", **extra):
    return {
        "schema": SCHEMA_VERSION, "status": status, "task": task, "task_kind": kind, "fold": fold, "seed": seed,
        "upstream": {"key": key, "hub": key, "label": label or key}, "metrics": {"test": metrics},
        "config": {}, "versions": {}, **extra,
    }


def _write(out: Path, data):
    path = out / data["task"] / data["upstream"]["key"] / data["fold"] / f"seed{data['seed']}" / "results.json"
    atomic.write_json(path, data)
    return path


def _fixture(out: Path):
    # emotion_cafe: 2 folds x 2 seeds; values chosen so mean/std are exact by hand.
    wf1 = {"wavlm": [0.60, 0.62, 0.64, 0.66], "care": [0.70, 0.80, 0.70, 0.80]}
    uar = {"wavlm": [0.50, 0.50, 0.50, 0.50], "care": [0.75, 0.75, 0.85, 0.85]}
    labels = {"wavlm": "WavLM-base", "care": "CARE"}
    for key in ("care", "wavlm"):
        i = 0
        for fold in ("fold1", "fold2"):
            for seed in (0, 1):
                _write(out, _result("emotion_cafe", key, fold, seed,
                                    {"weighted_f1": wf1[key][i], "uar": uar[key][i], "accuracy": 0.5},
                                    label=labels[key], layer_weights=[0.5, 0.25, 0.25]))
                i += 1
        _write(out, _result("emotion_emodb", key, "fold1", 0, {"weighted_f1": 0.9 if key == "care" else 0.8,
                                                               "uar": 0.85}, label=labels[key]))
    _write(out, _result("emotion_mspimprov", "care", "fold1", 0,
                        {"ccc_valence": 0.5, "ccc_arousal": 0.6, "ccc_dominance": 0.4},
                        label="CARE", kind="regression"))


EXPECTED_MD = """# Probe results

Weighted F1 and UAR (%) on the test split, mean ± std over folds × seeds (std with ddof=1).

| task | WavLM-base WF1 | WavLM-base UAR | CARE WF1 | CARE UAR |
|---|---:|---:|---:|---:|
| CaFE | 63.0 ± 2.6 | 50.0 ± 0.0 | 75.0 ± 5.8 | 80.0 ± 5.8 |
| EmoDB | 80.0 ± 0.0 | 85.0 ± 0.0 | 90.0 ± 0.0 | 85.0 ± 0.0 |
| average | 71.5 | 67.5 | 82.5 | 82.5 |

CCC on the test split, mean ± std over folds × seeds.

| task | WavLM-base CCC V | WavLM-base CCC A | WavLM-base CCC D | CARE CCC V | CARE CCC A | CARE CCC D |
|---|---:|---:|---:|---:|---:|---:|
| MSP-IMPROV | — | — | — | 0.500 ± 0.000 | 0.600 ± 0.000 | 0.400 ± 0.000 |

Cells per entry: CaFE / WavLM-base: 4 cells; CaFE / CARE: 4 cells; EmoDB / WavLM-base: 1 cells; EmoDB / CARE: 1 cells; MSP-IMPROV / CARE: 1 cells.
"""


def test_mean_std_by_hand():
    m, s = mean_std([0.60, 0.62, 0.64, 0.66])
    assert m == pytest.approx(0.63)
    assert s == pytest.approx(0.025819888974716)  # sqrt(0.002 / 3)
    assert mean_std([0.3], ddof=1) == (0.3, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_table_matches_expected(tmp_path):
    _fixture(tmp_path)
    c = collect(tmp_path)
    assert c.upstreams == ["wavlm", "care"]  # paper column order, not alphabetical
    assert c.tasks == ["emotion_cafe", "emotion_emodb", "emotion_mspimprov"]
    assert render_markdown(c) == EXPECTED_MD
    rows = render_csv(c).splitlines()
    assert rows[0].startswith("task,wavlm:weighted_f1:mean,wavlm:weighted_f1:std,wavlm:weighted_f1:n")
    cafe = rows[1].split(",")
    assert cafe[0] == "emotion_cafe" and cafe[1:4] == ["0.630000", "0.025820", "4"]
    assert rows[-1].split(",")[0] == "average"


def test_missing_and_failed_cells_are_reported(tmp_path):
    _fixture(tmp_path)
    # plan asks for a third CaFE fold for CARE that never finished, and one cell failed
    plan = {"upstreams": [{"key": "wavlm", "label": "WavLM-base"}, {"key": "care", "label": "CARE"}],
            "cells": [{"task": "emotion_cafe", "upstream": k, "fold": f, "seed": s}
                      for k in ("wavlm", "care") for f in ("fold1", "fold2") for s in (0, 1)]
            + [{"task": "emotion_cafe", "upstream": "care", "fold": "fold3", "seed": 0}]}
    (tmp_path / "sweep.json").write_text(json.dumps(plan))
    _write(tmp_path, _result("emotion_cafe", "care", "fold3", 0, {}, status="failed", error="boom"))
    bad = tmp_path / "emotion_cafe" / "care" / "fold4" / "seed0" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    md = render_markdown(collect(tmp_path))
    assert "75.0 ± 5.8 (4/5)" in md
    assert "average (1 of 2 tasks)" in md  # CaFE is incomplete for CARE, so it leaves the average
    assert "incomplete: emotion_cafe / CARE: 4 of 5 cells finished" in md
    assert "failed:" in md and "boom" in md
    assert "unreadable:" in md and "fold4" in md


def test_nan_metric_is_refused(tmp_path):
    path = _write(tmp_path, _result("emotion_cafe", "care", "fold1", 0, {"weighted_f1": float("nan")}))
    with pytest.raises(ResultsError, match="not a number"):
        read_results(path)


def test_cli_rebuilds_from_folder_alone(tmp_path, capsys):
    _fixture(tmp_path)
    main([str(tmp_path)])
    assert (tmp_path / "table.md").read_text() == EXPECTED_MD
    assert (tmp_path / "table.csv").is_file()
    assert (tmp_path / "plots" / "bars_weighted_f1.png").is_file()
    assert (tmp_path / "plots" / "layer_weights_care.png").is_file()
    with pytest.raises(SystemExit):
        (tmp_path / "emotion_cafe" / "care" / "fold1" / "seed0" / "results.json").write_text("[]")
        main([str(tmp_path), "--strict", "--no-plots"])


def test_two_checkpoints_of_one_model_get_distinct_columns(tmp_path):
    for key in ("care-aaaa", "care-bbbb"):
        _write(tmp_path, _result("emotion_cafe", key, "fold1", 0, {"weighted_f1": 0.5, "uar": 0.5}, label="CARE"))
    md = render_markdown(collect(tmp_path))
    assert "CARE [care-aaaa] WF1" in md and "CARE [care-bbbb] WF1" in md
