"""Segmentation metrics over class-id layouts: per-class IoU and mean IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentationResult:
    miou: float  # mean IoU over classes present in truth or prediction
    iou: dict[int, float]  # class id -> IoU, for those classes
    pixel_accuracy: float


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
              ignore: int | None = None) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = truth, columns = prediction."""
    t, p = np.asarray(y_true).ravel().astype(np.int64), np.asarray(y_pred).ravel().astype(np.int64)
    keep = t != ignore if ignore is not None else np.ones_like(t, dtype=bool)
    t, p = t[keep], p[keep]
    if t.size and (max(t.max(), p.max()) >= n_classes or min(t.min(), p.min()) < 0):
        raise ValueError(f"class ids must be in [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def segmentation_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                         ignore: int | None = None) -> SegmentationResult:
    """IoU per class and their mean over every pixel of every layout given.

    Args:
        y_true, y_pred: integer class ids, any matching shape (e.g. (N, H, W)).
        ignore: a truth class id to leave out (e.g. 255 for "unlabelled").
    """
    cm = confusion(y_true, y_pred, n_classes, ignore)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    present = np.nonzero(union > 0)[0]
    iou = {int(c): float(inter[c] / union[c]) for c in present}
    total = cm.sum()
    return SegmentationResult(float(np.mean(list(iou.values()))) if iou else float("nan"), iou,
                              float(inter.sum() / total) if total else float("nan"))
