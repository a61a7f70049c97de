"""Metrics against a confusion matrix worked out by hand."""
import math

import numpy as np
import pytest

from semla_ros.evaluation.metrics import (
    ConfusionAccumulator,
    confusion_matrix,
    harmonic_mean,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
)

# 3 classes, 2x5 image; the 255 pixel must not count anywhere.
GT = np.array([[0, 0, 1, 1, 2],
               [0, 255, 1, 2, 2]], np.uint8)
PRED = np.array([[0, 1, 1, 1, 2],
                 [0, 2, 0, 2, 1]], np.int64)


def test_confusion_matrix_by_hand():
    # gt 0: pixels (0,0)->0 (0,1)->1 (1,0)->0          => row [2,1,0]
    # gt 1: (0,2)->1 (0,3)->1 (1,2)->0                 => row [1,2,0]
    # gt 2: (0,4)->2 (1,3)->2 (1,4)->1                 => row [0,1,2]
    expected = np.array([[2, 1, 0], [1, 2, 0], [0, 1, 2]])
    cm = confusion_matrix(PRED, GT, 3)
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 9  # the ignored pixel is gone


def test_iou_and_miou_by_hand():
    cm = confusion_matrix(PRED, GT, 3)
    # class 0: tp 2, fp 1 (gt1->0), fn 1 => 2/4; class 1: tp 2, fp 2, fn 1 => 2/5; class 2: tp 2, fp 0, fn 1 => 2/3
    np.testing.assert_allclose(per_class_iou(cm), [0.5, 0.4, 2 / 3])
    assert mean_iou(cm) == pytest.approx((0.5 + 0.4 + 2 / 3) / 3)
    assert pixel_accuracy(cm) == pytest.approx(6 / 9)


def test_absent_class_is_left_out_and_false_positive_class_counts_zero():
    gt = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 0, 2, 3]])  # class 3 only under the ignore pixel: not counted
    cm = confusion_matrix(pred, gt, 4)
    iou = per_class_iou(cm)
    assert iou[0] == 1.0 and iou[1] == 0.0 and iou[2] == 0.0  # class 2 predicted, absent in gt: IoU 0
    assert math.isnan(iou[3])  # in neither: undefined, not averaged
    assert mean_iou(cm) == pytest.approx(1 / 3)


def test_bad_ids_are_clear_errors():
    with pytest.raises(ValueError, match="ground-truth ids"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 7), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_accumulator_sums_images():
    acc = ConfusionAccumulator(3)
    acc.add(PRED, GT)
    acc.add(PRED[:, :2], GT[:, :2])
    np.testing.assert_array_equal(acc.matrix,
                                  confusion_matrix(PRED, GT, 3) + confusion_matrix(PRED[:, :2], GT[:, :2], 3))
    assert acc.images == 2


def test_harmonic_mean_ignores_excluded_and_undefined_domains():
    scores = {"fog": 0.5, "night": 0.25, "clear": 0.9, "snow": float("nan")}
    assert harmonic_mean(scores, exclude={"clear"}) == pytest.approx(2 / (1 / 0.5 + 1 / 0.25))
    assert harmonic_mean(scores) == pytest.approx(3 / (1 / 0.5 + 1 / 0.25 + 1 / 0.9))
    assert harmonic_mean({"a": 0.0, "b": 0.7}) == 0.0
    assert math.isnan(harmonic_mean({"a": 0.3}, exclude={"a"}))
