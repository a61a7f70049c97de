"""Segmentation metrics: confusion matrix, per-class IoU, mIoU, harmonic mean over domains.

Conventions (the ones detectron2's SemSegEvaluator and the SemLA tables use):
- rows of the confusion matrix are ground truth, columns are predictions;
- ground-truth pixels equal to `ignore_index` (255) are not counted at all;
- IoU_c = TP / (TP + FP + FN); a class with an empty union (absent from both the ground
  truth and the prediction) has no IoU (nan) and is left out of the mean;
- a domain's mIoU comes from ONE confusion matrix accumulated over all its images (not the
  mean of per-image mIoUs, which over-weights small images and rare classes).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(pred, gt, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 counts, cm[g, p] = pixels with ground truth g predicted as p."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    keep = gt != ignore_index
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= num_classes):
        bad = np.unique(g[(g < 0) | (g >= num_classes)])[:5]
        raise ValueError(f"ground-truth ids {bad.tolist()} are outside 0..{num_classes - 1} "
                         f"(and are not the ignore index {ignore_index})")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        bad = np.unique(p[(p < 0) | (p >= num_classes)])[:5]
        raise ValueError(f"predicted ids {bad.tolist()} are outside 0..{num_classes - 1}")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """(C,) float64 IoU per class; nan where the class is in neither ground truth nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of the defined per-class IoUs (nan when no class is defined)."""
    iou = per_class_iou(cm)
    defined = iou[~np.isnan(iou)]
    return float(defined.mean()) if defined.size else math.nan


def pixel_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else math.nan


def harmonic_mean(values: Mapping[str, float] | Iterable[float], exclude: Iterable[str] = ()) -> float:
    """Harmonic mean of per-domain scores, leaving out `exclude` (names) and undefined (nan) scores.

    Why excluded: the paper's h-mean is over target domains only, so the source domain (and any
    domain a method cannot be run on, e.g. an oracle without the domain's adapter) stays out.
    A zero score makes the harmonic mean zero, as it should.
    """
    if isinstance(values, Mapping):
        excluded = set(exclude)
        scores = [v for k, v in values.items() if k not in excluded]
    else:
        scores = list(values)
    scores = [float(v) for v in scores if v is not None and not math.isnan(float(v))]
    if not scores:
        return math.nan
    if any(v < 0 for v in scores):
        raise ValueError(f"harmonic mean needs non-negative scores, got {scores}")
    if any(v == 0 for v in scores):
        return 0.0
    return len(scores) / sum(1.0 / v for v in scores)


class ConfusionAccumulator:
    """Sums confusion matrices over images; one per (method, domain)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.images = 0

    def add(self, pred, gt) -> np.ndarray:
        """Adds one image; returns its own confusion matrix (for per-image scores)."""
        cm = confusion_matrix(pred, gt, self.num_classes, self.ignore_index)
        self.matrix += cm
        self.images += 1
        return cm

    @property
    def miou(self) -> float:
        return mean_iou(self.matrix)

    @property
    def iou(self) -> np.ndarray:
        return per_class_iou(self.matrix)
