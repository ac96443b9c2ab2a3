"""Fold/seed aggregation and table rendering on hand-made results.json files."""

import json
from pathlib import Path

import pytest

from care_core import atomic
from sweep.cells import SCHEMA_VERSION, ResultsError, read_results
from sweep.table import collect, main, mean_ci, mean_std, paired_p, render_csv, render_markdown


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
                                    label=labels[key], layer_weights=[0.5, 0.25, 0.25],
                                    reference={"chance_uar": 0.25, "majority_class": "anger",
                                               "majority_weighted_f1": 0.1 + 0.02 * (fold == "fold2"),
                                               "majority_accuracy": 0.25, "majority_uar": 0.25}))
                i += 1
        _write(out, _result("emotion_emodb", key, "fold1", 0, {"weighted_f1": 0.9 if key == "care" else 0.8,
                                                               "uar": 0.85}, label=labels[key]))
    _write(out, _result("emotion_mspimprov", "care", "fold1", 0,
                        {"ccc_valence": 0.5, "ccc_arousal": 0.6, "ccc_dominance": 0.4},
                        label="CARE", kind="regression",
                        reference={"mean_ccc": {"valence": 0.0, "arousal": 0.0, "dominance": 0.0}}))


EXPECTED_MD = """# Probe results

Weighted F1 and UAR (%) on the test split, mean ± std over folds × seeds (std with ddof=1) [95 % CI of the mean]. \
Under each task, what a probe that learnt nothing scores: the train split's majority class (WF1) and chance (UAR = 1/K).

| task | WavLM-base WF1 | WavLM-base UAR | CARE WF1 | CARE UAR |
|---|---:|---:|---:|---:|
| CaFE | 63.0 ± 2.6 [58.9, 67.1] | 50.0 ± 0.0 [50.0, 50.0] | 75.0 ± 5.8 [65.8, 84.2] | 80.0 ± 5.8 [70.8, 89.2] |
| CaFE reference (majority / chance) | 11.0 | 25.0 | 11.0 | 25.0 |
| EmoDB | 80.0 (n = 1) | 85.0 (n = 1) | 90.0 (n = 1) | 85.0 (n = 1) |
| average | 71.5 | 67.5 | 82.5 | 82.5 |

CCC on the test split, mean ± std over folds × seeds [95 % CI of the mean]; the reference row is the CCC of always \
predicting the train mean (0).

| task | WavLM-base CCC V | WavLM-base CCC A | WavLM-base CCC D | CARE CCC V | CARE CCC A | CARE CCC D |
|---|---:|---:|---:|---:|---:|---:|
| MSP-IMPROV | — | — | — | 0.500 (n = 1) | 0.600 (n = 1) | 0.400 (n = 1) |
| MSP-IMPROV reference (train mean) | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 | 0.000 |

\\* p < 0.05 against WavLM-base: two-sided Wilcoxon signed-rank test over the (fold, seed) cells both finished \
(p-values in table.csv); with fewer than 6 pairs no difference can reach p < 0.05.

Cells per entry: CaFE / WavLM-base: 4 cells; CaFE / CARE: 4 cells; EmoDB / WavLM-base: 1 cells; EmoDB / CARE: 1 cells; \
MSP-IMPROV / CARE: 1 cells.
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
    header = rows[0].split(",")
    cafe = dict(zip(header, rows[1].split(",")))
    assert rows[1].startswith("emotion_cafe,0.630000,0.025820,4,")
    # t(0.975, 3) = 3.18245: 0.63 -+ 3.18245 * 0.0258199 / 2
    assert float(cafe["wavlm:weighted_f1:ci_low"]) == pytest.approx(0.588915, abs=1e-6)
    assert cafe["wavlm:weighted_f1:p"] == ""  # the reference upstream is not tested against itself
    assert float(cafe["care:weighted_f1:p"]) == pytest.approx(0.125)  # 4 pairs, all CARE > WavLM: 2 / 2**4
    ref = dict(zip(header, rows[2].split(",")))
    assert ref["task"] == "emotion_cafe (reference)"
    assert float(ref["care:weighted_f1:mean"]) == pytest.approx(0.11) and float(ref["care:uar:mean"]) == 0.25
    emodb = dict(zip(header, rows[3].split(",")))
    assert emodb["care:weighted_f1:n"] == "1" and emodb["care:weighted_f1:std"] == ""  # n = 1: no spread
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
    assert "75.0 ± 5.8 [65.8, 84.2] (4/5)" in md
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


def test_paired_test_and_interval_by_hand():
    assert paired_p([0.6, 0.7, 0.8, 0.9, 1.0, 1.1], [0.5] * 6) == pytest.approx(2 / 2 ** 6)  # exact, all one sign
    assert paired_p([0.5, 0.6], [0.5, 0.6]) == 1.0
    assert paired_p([0.5], [0.4]) is None
    lo, hi = mean_ci([1.0, 2.0, 3.0])  # mean 2, s 1, t(0.975, 2) = 4.302653
    assert (lo, hi) == pytest.approx((2 - 4.302653 / 3 ** 0.5, 2 + 4.302653 / 3 ** 0.5), abs=1e-6)
    assert mean_ci([0.3]) is None


def test_significance_marker_reference_choice_and_degenerate_mark(tmp_path):
    """Six paired cells where B beats A every time: p = 2/64 < 0.05, marked; the reference can be
    chosen; a degenerate upstream is marked ‡ and explained."""
    for seed in range(6):
        _write(tmp_path, _result("emotion_cafe", "fbank", "fold1", seed, {"weighted_f1": 0.30, "uar": 0.25},
                                 label="FBANK", degenerate={"spread_ratio": 1e-15}))
        _write(tmp_path, _result("emotion_cafe", "egemaps", "fold1", seed,
                                 {"weighted_f1": 0.5 + 0.01 * seed, "uar": 0.4 + 0.01 * seed}, label="eGeMAPS"))
    md = render_markdown(collect(tmp_path, reference="FBANK"))
    assert "| task | eGeMAPS WF1 | eGeMAPS UAR | FBANK ‡ WF1 | FBANK ‡ UAR |" in md
    assert "52.5 ± 1.9 [50.5, 54.5] *" in md and "p < 0.05 against FBANK" in md
    assert "‡ pooled features are the same for every utterance" in md
    header, row = render_csv(collect(tmp_path, reference="fbank")).splitlines()[:2]
    assert float(dict(zip(header.split(","), row.split(",")))["egemaps:uar:p"]) == pytest.approx(0.03125)
    # the reference itself is never marked; the other column is, whichever way the difference goes
    row = next(line for line in render_markdown(collect(tmp_path, reference="egemaps")).splitlines()
               if line.startswith("| CaFE |"))
    assert row.count(" *") == 2 and row.endswith("[25.0, 25.0] * |") and "[50.5, 54.5] |" in row
    with pytest.raises(ValueError, match="not an upstream of this sweep"):
        collect(tmp_path, reference="wavlm")
    with pytest.raises(SystemExit, match="--reference 'wavlm' is not an upstream"):
        main([str(tmp_path), "--reference", "wavlm", "--no-plots"])


def test_daicwoz_participant_scores_and_dev_footnote(tmp_path):
    for seed in range(2):
        _write(tmp_path, _result(
            "depression_daicwoz", "care", "fold1", seed, {"weighted_f1": 0.6 + 0.1 * seed, "uar": 0.55},
            label="CARE", reference={"chance_uar": 0.5, "majority_weighted_f1": 0.55},
            participant={"vote": {"f1_depressed": 0.4, "macro_f1": 0.6, "uar": 0.6 + 0.1 * seed},
                         "mean_prob": {"f1_depressed": 0.5, "macro_f1": 0.65, "uar": 0.62},
                         "n_participants": 35}))
    md = render_markdown(collect(tmp_path))
    assert "DAIC-WOZ per participant" in md
    assert "| CARE | 65.0 ± 7.1 [1.5, 128.5] | 40.0 ± 0.0 [40.0, 40.0] |" in md and "| 35 |" in md
    assert "dev is both the set that selects the best checkpoint and the set reported" in md
    header, row = render_csv(collect(tmp_path)).splitlines()[:2]
    cells = dict(zip(header.split(","), row.split(",")))
    assert float(cells["care:participant_vote_uar:mean"]) == pytest.approx(0.65)
    assert float(cells["care:weighted_f1:mean"]) == pytest.approx(0.65)


def test_plan_labels_refusals_and_chance_line(tmp_path):
    _fixture(tmp_path)
    plan = {"upstreams": [{"key": "wavlm", "label": "WavLM-base"}, {"key": "care", "label": "trained"}],
            "cells": [], "reference": "care",
            "refused": {"emotion_cafe/fbank/fold1/seed0": "upstream FBANK (fbank) refused on cafe: ..."}}
    (tmp_path / "sweep.json").write_text(json.dumps(plan))
    c = collect(tmp_path)
    assert c.labels["care"] == "trained" and c.reference == "care"  # the latest sweep's name wins
    assert any(p.startswith("refused: upstream FBANK") for p in c.problems)
    from sweep.plots import write_plots
    from sweep.table import TableConfig

    paths = write_plots(c, tmp_path, TableConfig())
    assert tmp_path / "plots" / "bars_uar.png" in paths
