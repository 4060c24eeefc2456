"""Binary and multi-class classification metrics: accuracy, F1, ROC AUC, average precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinaryResult:
    accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float  # NaN when only one class is present
    ap: float  # NaN when there are no positives


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float((np.asarray(y_true) == np.asarray(y_pred)).mean())


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Binary precision, recall, F1 of the positive class (0.0 where undefined)."""
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp, fp, fn = float((t & p).sum()), float((~t & p).sum()), float((t & ~p).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return prec, rec, f1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in truth or prediction."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean([precision_recall_f1(t == c, p == c)[2] for c in np.union1d(t, p)]))


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get half credit)."""
    t, s = np.asarray(y_true).astype(bool), np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # Average ranks over tied scores.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Step-wise area under the precision-recall curve (the scikit-learn definition)."""
    t, s = np.asarray(y_true).astype(bool), np.asarray(score, dtype=np.float64)
    if not t.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    t, s = t[order], s[order]
    # Evaluate only at the last index of each run of tied scores.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / t.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> BinaryResult:
    """All binary metrics, predicting positive where score >= threshold."""
    pred = np.asarray(score) >= threshold
    prec, rec, f1 = precision_recall_f1(y_true, pred)
    return BinaryResult(accuracy(np.asarray(y_true).astype(bool), pred), prec, rec, f1,
                        roc_auc(y_true, score), average_precision(y_true, score))
