"""Pure metric functions for the paper's tables; no torch, no state.

Weighted F1 is the paper's primary number; UAR (mean per-class recall, = macro recall) is the one
in brackets; CCC is MSP-IMPROV's. Every classification metric takes the label order explicitly so
that a class missing from a small split still gets its row and column (zero) instead of silently
shifting the confusion matrix.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Dict, List, Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix as _sk_confusion, f1_score, recall_score


def _check(y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty split")


def weighted_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> float:
    """F1 per class, averaged with weights = true support (sklearn ``average='weighted'``)."""
    _check(y_true, y_pred)
    return float(f1_score(y_true, y_pred, labels=list(labels), average="weighted", zero_division=0))


def uar(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> float:
    """Unweighted average recall over the classes present in y_true (absent classes have no recall)."""
    _check(y_true, y_pred)
    present = [label for label in labels if label in set(y_true)]
    return float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    _check(y_true, y_pred)
    return float(accuracy_score(y_true, y_pred))


def confusion(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> List[List[int]]:
    """Rows = truth, columns = prediction, both in `labels` order."""
    _check(y_true, y_pred)
    return _sk_confusion(y_true, y_pred, labels=list(labels)).astype(int).tolist()


def ccc(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Concordance correlation coefficient (paper eq. 5), population moments:
    2 cov / (var_t + var_p + (mean_t - mean_p)^2). 0 when both sides are constant and differ."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    _check(t, p)
    mt, mp = t.mean(), p.mean()
    # A constant side has no covariance: say so exactly instead of leaving rounding residue (1e-31).
    constant_t, constant_p = np.ptp(t) == 0, np.ptp(p) == 0
    cov = 0.0 if constant_t or constant_p else ((t - mt) * (p - mp)).mean()
    denom = (0.0 if constant_t else t.var()) + (0.0 if constant_p else p.var()) + (mt - mp) ** 2
    if denom == 0:
        return 1.0 if np.allclose(t, p) else 0.0
    return float(2 * cov / denom)


def classification_report(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> Dict[str, object]:
    """All classification numbers at once, as stored in results.json."""
    return {
        "weighted_f1": weighted_f1(y_true, y_pred, labels),
        "uar": uar(y_true, y_pred, labels),
        "accuracy": accuracy(y_true, y_pred),
        "confusion": confusion(y_true, y_pred, labels),
    }


def regression_report(y_true: np.ndarray, y_pred: np.ndarray, targets: Sequence[str]) -> Dict[str, float]:
    """CCC per target column plus their mean (``ccc_mean``, the model-selection number)."""
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if t.shape != p.shape or t.shape[1] != len(targets):
        raise ValueError(f"expected (N, {len(targets)}) arrays, got {t.shape} and {p.shape}")
    out = {f"ccc_{name}": ccc(t[:, i], p[:, i]) for i, name in enumerate(targets)}
    out["ccc_mean"] = float(np.mean([out[f"ccc_{n}"] for n in targets]))
    return out


# ------------------------------------------------------------------------------ references
def majority_class(train_labels: Sequence, classes: Sequence) -> str:
    """The train split's most frequent class; a tie goes to the class listed first in `classes`."""
    if len(train_labels) == 0:
        raise ValueError("cannot find the majority class of an empty train split")
    counts = Counter(train_labels)
    return max(classes, key=lambda c: (counts.get(c, 0), -list(classes).index(c)))


def reference_scores(train_labels: Sequence, test_labels: Sequence, classes: Sequence) -> Dict[str, object]:
    """What a probe that learnt nothing scores on the evaluated split, so a table can be read against it.

    ``chance_uar`` is 1/K over the task's K classes (a uniform random guess). The ``majority_*``
    numbers always predict the TRAIN split's majority class and score that constant on `test_labels`:
    a probe that only learnt the class prior lands exactly there (its UAR is 1/K_present).
    """
    classes = list(classes)
    majority = majority_class(train_labels, classes)
    constant = [majority] * len(test_labels)
    return {
        "chance_uar": 1.0 / len(classes),
        "majority_class": str(majority),
        "majority_weighted_f1": weighted_f1(test_labels, constant, classes),
        "majority_accuracy": accuracy(test_labels, constant),
        "majority_uar": uar(test_labels, constant, classes),
    }


def regression_reference_scores(train_values: np.ndarray, test_values: np.ndarray,
                                targets: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """The CCC of always predicting the train mean, per target (0: a constant has no covariance
    with the truth), and the train means themselves, in the shape ``{"mean_ccc": {target: 0.0},
    "train_mean": {target: float}}``."""
    tr = np.asarray(train_values, dtype=np.float64).reshape(len(train_values), -1)
    te = np.asarray(test_values, dtype=np.float64).reshape(len(test_values), -1)
    if tr.shape[1] != len(targets) or te.shape[1] != len(targets) or len(tr) == 0:
        raise ValueError(f"expected non-empty (N, {len(targets)}) arrays, got {tr.shape} and {te.shape}")
    means = tr.mean(axis=0)
    return {
        "mean_ccc": {name: ccc(te[:, i], np.full(len(te), means[i])) for i, name in enumerate(targets)},
        "train_mean": {name: float(means[i]) for i, name in enumerate(targets)},
    }


# ---------------------------------------------------------------------- participant grain
def _binary_scores(truth: Sequence[str], pred: Sequence[str], positive: str, negative: str) -> Dict[str, float]:
    classes = [negative, positive]
    return {
        "f1_depressed": float(f1_score(truth, pred, labels=[positive], average="macro", zero_division=0)),
        "macro_f1": float(f1_score(truth, pred, labels=classes, average="macro", zero_division=0)),
        "uar": uar(truth, pred, classes),
    }


def participant_scores(participants: Sequence[str], labels: Sequence[str], probs: Sequence[float],
                       positive: str = "depressed", negative: str = "not_depressed") -> Dict[str, object]:
    """DAIC-WOZ scored per interview, as the depression literature (AVEC 2017 on) reports it.

    `participants`, `labels` and `probs` are per segment: the participant id, the true class name
    and the predicted probability of `positive`. Two ways to reach one decision per participant:

    * ``vote``: each segment votes for its argmax class (P >= 0.5 is `positive`); the participant is
      `positive` when strictly more than half of its segments are (a tie stays `negative`);
    * ``mean_prob``: the participant is `positive` when the mean of its segments' P is >= 0.5.

    Each gives F1 of the depressed class, macro F1 over both classes and UAR, over participants.
    A participant whose segments carry two different labels is refused (the label is per interview).
    """
    if not (len(participants) == len(labels) == len(probs)):
        raise ValueError(f"participants, labels and probs differ in length: "
                         f"{len(participants)}, {len(labels)}, {len(probs)}")
    if len(participants) == 0:
        raise ValueError("cannot score an empty split")
    truth: Dict[str, str] = {}
    seg_probs: Mapping[str, List[float]] = defaultdict(list)
    for pid, label, prob in zip(participants, labels, probs):
        if label not in (positive, negative):
            raise ValueError(f"participant {pid}: label {label!r} is neither {positive!r} nor {negative!r}")
        if truth.setdefault(pid, label) != label:
            raise ValueError(f"participant {pid} has segments labelled both {truth[pid]!r} and {label!r}")
        seg_probs[pid].append(float(prob))
    ids = sorted(truth)
    y = [truth[p] for p in ids]
    vote = [positive if sum(q >= 0.5 for q in seg_probs[p]) * 2 > len(seg_probs[p]) else negative for p in ids]
    mean = [positive if float(np.mean(seg_probs[p])) >= 0.5 else negative for p in ids]
    return {
        "vote": _binary_scores(y, vote, positive, negative),
        "mean_prob": _binary_scores(y, mean, positive, negative),
        "n_participants": len(ids),
    }
