"""Pure metric functions for the paper's tables (SPEC §4-5); no torch, no state.

Weighted F1 is the paper's primary number; UAR (mean per-class recall, = macro recall) is the one
in brackets; CCC is MSP-IMPROV's. Every classification metric takes the label order explicitly so
that a class missing from a small split still gets its row and column (zero) instead of silently
shifting the confusion matrix.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

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
    cov = ((t - mt) * (p - mp)).mean()
    denom = t.var() + p.var() + (mt - mp) ** 2
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
