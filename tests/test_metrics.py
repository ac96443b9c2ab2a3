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


# ------------------------------------------------------------------ references (chance, majority)
def test_reference_scores_by_hand():
    # train majority a; scored on test a b b c: constant a -> acc 1/4; F1(a) = 2*(1/4*1)/(1/4+1) = 0.4,
    # weighted by support 1 of 4 -> 0.1; recall a=1, b=0, c=0 -> UAR 1/3; chance over 4 classes 1/4
    ref = metrics.reference_scores(["a", "a", "a", "b", "c"], ["a", "b", "b", "c"], ["a", "b", "c", "d"])
    assert ref["majority_class"] == "a"
    assert ref["chance_uar"] == pytest.approx(0.25)
    assert ref["majority_accuracy"] == pytest.approx(0.25)
    assert ref["majority_weighted_f1"] == pytest.approx(0.1)
    assert ref["majority_uar"] == pytest.approx(1 / 3)


def test_reference_majority_absent_from_test_and_ties():
    ref = metrics.reference_scores(["a", "a", "b"], ["b", "c"], ["a", "b", "c"])
    assert (ref["majority_accuracy"], ref["majority_weighted_f1"], ref["majority_uar"]) == (0.0, 0.0, 0.0)
    # a tie goes to the class listed first, whatever the order of the train labels
    assert metrics.reference_scores(["a", "b", "b", "a"], ["a"], ["b", "a"])["majority_class"] == "b"
    with pytest.raises(ValueError, match="empty train split"):
        metrics.reference_scores([], ["a"], ["a", "b"])


def test_regression_reference_is_zero_ccc_of_the_train_mean():
    train = np.array([[1.0, 2.0], [3.0, 4.0]])
    test = np.array([[0.0, 1.0], [5.0, 2.0], [2.0, 7.0]])
    ref = metrics.regression_reference_scores(train, test, ["valence", "arousal"])
    assert ref["mean_ccc"] == {"valence": 0.0, "arousal": 0.0}
    assert ref["train_mean"] == {"valence": 2.0, "arousal": 3.0}


# ------------------------------------------------------------------ DAIC-WOZ participant grain
def test_participant_scores_by_hand():
    segs = [("P1", "depressed", [0.9, 0.6, 0.2]),      # vote 2/3 -> dep; mean .567 -> dep
            ("P2", "not_depressed", [0.4, 0.7]),       # vote 1/2 tie -> not; mean .55 -> dep
            ("P3", "depressed", [0.3, 0.45, 0.8, 0.1]),  # vote 1/4 -> not; mean .41 -> not
            ("P4", "not_depressed", [0.1])]            # not, not
    parts, labels, probs = [], [], []
    for pid, label, ps in segs:
        parts += [pid] * len(ps)
        labels += [label] * len(ps)
        probs += ps
    out = metrics.participant_scores(parts, labels, probs)
    assert out["n_participants"] == 4
    # vote: truth D N D N, pred D N N N -> F1(dep) = 2/3; F1(not) = 2*(2/3*1)/(2/3+1) = 0.8; UAR (1/2+1)/2
    assert out["vote"]["f1_depressed"] == pytest.approx(2 / 3)
    assert out["vote"]["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert out["vote"]["uar"] == pytest.approx(0.75)
    # mean prob: pred D D N N -> every class P = R = 1/2
    assert out["mean_prob"] == pytest.approx({"f1_depressed": 0.5, "macro_f1": 0.5, "uar": 0.5})


def test_participant_scores_refuse_mixed_labels_and_bad_lengths():
    with pytest.raises(ValueError, match="P1 has segments labelled both"):
        metrics.participant_scores(["P1", "P1"], ["depressed", "not_depressed"], [0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.participant_scores(["P1"], ["depressed", "depressed"], [0.2])
