"""ConfusionMatrix: hand-computed metrics, ignore handling, NaN for absent classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsss.eval.confusion import ConfusionMatrix

# 3 classes (0 background). Pixel pairs (gt → pred):
#   gt 0: 0,0,0,1        gt 1: 1,1,0        gt 2: 2,1,255(no prediction)       gt 255: 2,0 (ignored)
GT = np.array([[0, 0, 0, 0, 1, 1], [1, 2, 2, 2, 255, 255]])
PRED = np.array([[0, 0, 0, 1, 1, 1], [0, 2, 1, 255, 2, 0]])


def test_hand_computed_example():
    cm = ConfusionMatrix(3).update(PRED, GT)
    np.testing.assert_array_equal(cm.matrix, [[3, 1, 0], [1, 2, 0], [0, 1, 1]])
    np.testing.assert_array_equal(cm.missed, [0, 0, 1])
    # TP = 3, 2, 1; gt = 4, 3, 3; pred = 4, 4, 1
    np.testing.assert_allclose(cm.iou, [3 / 5, 2 / 5, 1 / 3])
    np.testing.assert_allclose(cm.precision, [3 / 4, 2 / 4, 1 / 1])
    np.testing.assert_allclose(cm.recall, [3 / 4, 2 / 3, 1 / 3])
    assert cm.miou == pytest.approx((3 / 5 + 2 / 5 + 1 / 3) / 3)
    assert cm.pixel_accuracy == pytest.approx(6 / 10)


def test_ignored_gt_pixels_change_nothing():
    cm = ConfusionMatrix(3).update(PRED, GT)
    keep = GT != 255
    other = ConfusionMatrix(3).update(PRED[keep], GT[keep])
    np.testing.assert_array_equal(cm.matrix, other.matrix)
    np.testing.assert_array_equal(cm.missed, other.missed)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(4).update(np.array([0, 1, 1, 0]), np.array([0, 1, 1, 1]))
    assert math.isnan(cm.iou[2]) and math.isnan(cm.iou[3])
    assert math.isnan(cm.precision[3]) and math.isnan(cm.recall[3])
    np.testing.assert_allclose(cm.iou[:2], [1 / 2, 2 / 3])
    assert cm.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    # predicted but never in the ground truth: IoU 0, precision 0, recall NaN
    cm = ConfusionMatrix(3).update(np.array([2, 0]), np.array([0, 0]))
    assert cm.iou[2] == 0 and cm.precision[2] == 0 and math.isnan(cm.recall[2])


def test_empty_matrix_gives_nan_without_warnings():
    cm = ConfusionMatrix(3)
    with np.errstate(all="raise"):
        assert math.isnan(cm.miou) and math.isnan(cm.pixel_accuracy)
        assert np.isnan(cm.iou).all()


def test_merge_equals_one_update_of_both():
    a = ConfusionMatrix(3).update(PRED[0], GT[0])
    b = ConfusionMatrix(3).update(PRED[1], GT[1])
    both = ConfusionMatrix(3).update(PRED, GT)
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.matrix, both.matrix)
    np.testing.assert_array_equal(merged.missed, both.missed)
    with pytest.raises(ValueError, match="merge"):
        a.merge(ConfusionMatrix(4))


def test_shape_mismatch_names_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        ConfusionMatrix(3).update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_out_of_range_values_are_rejected():
    with pytest.raises(ValueError, match="value 7"):
        ConfusionMatrix(3).update(np.array([7]), np.array([0]))
    with pytest.raises(ValueError, match="value 3"):
        ConfusionMatrix(3).update(np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match="integer"):
        ConfusionMatrix(3).update(np.array([0.5]), np.array([0]))


def test_table_lists_every_class_and_the_summary():
    cm = ConfusionMatrix(3).update(PRED, GT)
    text = cm.table(["cat", "dog"])
    lines = text.splitlines()
    assert lines[1].startswith("background") and "0.6000" in lines[1]
    assert lines[3].startswith("dog") and "0.3333" in lines[3]
    assert "mIoU" in text and "pixel acc." in text and "0.6000" in lines[-1]
    assert len({len(line) for line in lines[:4]}) == 1  # fixed width
    assert cm.table(["background", "cat", "dog"]) == text
    with pytest.raises(ValueError, match="class names"):
        cm.table(["cat"])
