"""Metrics against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from downstream_tasks import metrics
from downstream_tasks.probe import ccc_loss

# truth a a a b b c / prediction a a b b c c
#   a: P 2/2, R 2/3, F1 0.8   b: P 1/2, R 1/2, F1 0.5   c: P 1/2, R 1/1, F1 2/3
T = ["a", "a", "a", "b", "b", "c"]
P = ["a", "a", "b", "b", "c", "c"]
LABELS = ["a", "b", "c"]


def test_weighted_f1_by_hand():
    expected = (3 * 0.8 + 2 * 0.5 + 1 * (2 / 3)) / 6
    assert metrics.weighted_f1(T, P, LABELS) == pytest.approx(expected)


def test_uar_is_mean_recall_by_hand():
    assert metrics.uar(T, P, LABELS) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_uar_ignores_classes_absent_from_truth():
    # 'd' has no true examples: it has no recall and must not pull the mean towards 0
    assert metrics.uar(T, P, LABELS + ["d"]) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_accuracy():
    assert metrics.accuracy(T, P) == pytest.approx(4 / 6)


def test_confusion_follows_given_label_order_and_keeps_empty_classes():
    m = metrics.confusion(T, P, ["c", "b", "a", "d"])
    assert m == [
        [1, 0, 0, 0],  # true c
        [1, 1, 0, 0],  # true b: one to c, one to b
        [0, 1, 2, 0],  # true a
        [0, 0, 0, 0],  # true d: absent
    ]


def test_perfect_and_worst_predictions():
    assert metrics.weighted_f1(T, T, LABELS) == 1.0
    wrong = ["b", "b", "b", "c", "c", "a"]
    assert metrics.weighted_f1(T, wrong, LABELS) == 0.0
    assert metrics.uar(T, wrong, LABELS) == 0.0


def test_ccc_by_hand():
    # shift by one: cov = var = 2/3, mean gap 1 -> (4/3) / (2/3 + 2/3 + 1) = 4/7
    assert metrics.ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert metrics.ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert metrics.ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # scaled predictions are perfectly correlated but not concordant: 2*(4/3) / (2/3 + 8/3 + 4)
    assert metrics.ccc([1, 2, 3], [2, 4, 6]) == pytest.approx((8 / 3) / (2 / 3 + 8 / 3 + 4))


def test_ccc_constant_sides():
    assert metrics.ccc([2, 2], [2, 2]) == 1.0
    assert metrics.ccc([2, 2], [3, 3]) == 0.0


def test_regression_report_per_target():
    t = np.array([[1, 1], [2, 3], [3, 5]], dtype=float)
    p = np.array([[2, 1], [3, 3], [4, 5]], dtype=float)
    rep = metrics.regression_report(t, p, ["valence", "arousal"])
    assert rep["ccc_valence"] == pytest.approx(4 / 7)
    assert rep["ccc_arousal"] == pytest.approx(1.0)
    assert rep["ccc_mean"] == pytest.approx((4 / 7 + 1) / 2)
    with pytest.raises(ValueError, match="expected"):
        metrics.regression_report(t, p[:, :1], ["valence", "arousal"])


def test_classification_report_keys():
    rep = metrics.classification_report(T, P, LABELS)
    assert set(rep) == {"weighted_f1", "uar", "accuracy", "confusion"}


@pytest.mark.parametrize("fn", [metrics.accuracy, metrics.ccc])
def test_bad_lengths_and_empty_raise(fn):
    with pytest.raises(ValueError, match="3 items but y_pred has 2"):
        fn([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


def test_torch_ccc_loss_matches_metric():
    t = torch.tensor([[1.0, 1.0], [2.0, 3.0], [3.0, 5.0]])
    p = torch.tensor([[2.0, 1.0], [3.0, 3.0], [4.0, 5.0]])
    assert ccc_loss(p, t).item() == pytest.approx(1 - (4 / 7 + 1) / 2, abs=1e-6)
    assert math.isclose(ccc_loss(t, t).item(), 0.0, abs_tol=1e-6)
