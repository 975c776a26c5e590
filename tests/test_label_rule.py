"""The label rule: each step on small hand-made examples, edge cases, and the batched opening."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wsss.refine import pseudo_labels
from wsss.refine.label_rule import binary_opening, positive_quantile

IGN = 255


def _rule(maps, tags, saliency=None, **kwargs):
    kwargs.setdefault("opening", 0)
    return pseudo_labels(torch.as_tensor(maps, dtype=torch.float32)[None],
                         torch.as_tensor(tags)[None],
                         None if saliency is None else torch.as_tensor(saliency, dtype=torch.bool)[None],
                         **kwargs)[0]


def test_salient_region_argmax_and_background_win_is_ignore():
    maps = np.zeros((2, 3, 4))
    maps[0, 0, :2] = 0.9  # class 1 strong on the first two pixels
    maps[1, 1, 1:3] = [0.5, 1.0]  # class 2
    saliency = np.zeros((3, 4), bool)
    saliency[:2] = True
    out = _rule(maps, [1, 1], saliency, tau=1.0)  # tau = 1: no completion
    expected = torch.tensor([[1, 1, IGN, IGN],
                             [IGN, 2, 2, IGN],
                             [0, 0, 0, 0]])
    assert out.dtype == torch.int64 and torch.equal(out, expected)


def test_background_power_decides_weak_pixels():
    # bg = (1 - 0.2)^alpha: alpha 32 → 0.0008 < 0.2 (class wins); alpha 1 → 0.8 > 0.2 (bg wins).
    maps = np.full((1, 1, 2), 0.2)
    assert _rule(maps, [1], [[True, True]]).tolist() == [[1, 1]]
    assert _rule(maps, [1], [[True, True]], alpha=1.0).tolist() == [[IGN, IGN]]


def test_untagged_classes_never_win():
    maps = np.zeros((2, 2, 2))
    maps[0] = 0.3
    maps[1] = 1.0  # untagged, strongest
    out = _rule(maps, [1, 0], np.ones((2, 2), bool))
    assert torch.equal(out, torch.ones(2, 2, dtype=torch.long))


def test_label_values_are_the_class_indices_plus_one():
    maps = np.zeros((6, 4, 4))
    maps[4, 1:3, 1:3] = 1.0
    maps[2, 0, 0] = 0.5  # untagged
    out = _rule(maps, [0, 0, 0, 0, 1, 0], np.ones((4, 4), bool), tau=1.0)
    assert out[1:3, 1:3].eq(5).all() and set(out.unique().tolist()) == {5, IGN}


def test_completion_outside_saliency_above_the_positive_quantile():
    maps = np.zeros((1, 3, 5))
    maps[0, 1:] = np.arange(1, 11).reshape(2, 5) / 10  # positive values 0.1 .. 1.0; row 0 stays 0
    saliency = np.zeros((3, 5), bool)
    # 0.5-quantile of 0.1..1.0 (linear) = 0.55: the five values 0.6..1.0 become class 1.
    out = _rule(maps, [1], saliency, tau=0.5)
    assert torch.equal(out, torch.tensor([[0] * 5, [0] * 5, [1] * 5]))
    # inside saliency the argmax rule applies, not completion
    assert _rule(maps, [1], np.ones((3, 5), bool), tau=0.5)[0].tolist() == [IGN] * 5


def test_conflict_marks_pixels_claimed_by_two_classes():
    maps = np.zeros((2, 2, 4))
    maps[0, 0] = [0.2, 0.4, 0.9, 1.0]  # class 1: 0.5-quantile 0.65, claims pixels 2, 3
    maps[1, 0] = [0.1, 0.3, 0.95, 0.5]  # class 2: 0.5-quantile 0.4, claims pixels 2, 3
    saliency = np.zeros((2, 4), bool)
    on = _rule(maps, [1, 1], saliency, tau=0.5)
    assert on[0].tolist() == [0, 0, IGN, IGN]
    off = _rule(maps, [1, 1], saliency, tau=0.5, conflict=False)
    assert off[0].tolist() == [0, 0, 2, 1]  # several claimers: the larger map value wins
    # inside saliency too: the argmax would say 1, the conflict says ignore
    inside = _rule(maps, [1, 1], np.ones((2, 4), bool), tau=0.5)
    assert inside[0].tolist() == [1, 1, IGN, IGN]


def test_without_saliency_background_comes_from_alpha_alone():
    maps = np.zeros((1, 2, 3))
    maps[0, 0] = [0.0, 0.05, 1.0]  # (1 - 0.05)^32 = 0.19 > 0.05: bg
    out = _rule(maps, [1], None, tau=1.0)
    assert out.tolist() == [[0, 0, 1], [0, 0, 0]]


def test_opening_removes_small_blobs_and_keeps_large_objects():
    maps = np.zeros((1, 30, 30))
    maps[0, 2:16, 2:16] = 1.0  # 14×14 object
    maps[0, 22:25, 22:25] = 1.0  # 3×3 blob
    out = _rule(maps, [1], None, opening=10, tau=1.0)
    assert (out[2:16, 2:16] == 1).all() and (out[22:25, 22:25] == 0).all()
    assert (_rule(maps, [1], None, opening=0, tau=1.0)[22:25, 22:25] == 1).all()


def test_opening_treats_ignore_as_foreground():
    maps = np.zeros((1, 20, 20))
    maps[0, 2:14, 2:14] = 0.9
    saliency = np.zeros((20, 20), bool)
    saliency[2:14, 2:14] = True
    saliency[16:18, 16:18] = True  # a small salient speck with no class: 255, then opened away
    out = _rule(maps, [1], saliency, opening=5, tau=1.0)
    assert (out[2:14, 2:14] == 1).all() and (out[16:18, 16:18] == 0).all()


def test_image_without_tags_is_all_background():
    maps = np.random.default_rng(0).random((2, 6, 6))
    out = _rule(maps, [0, 0], np.ones((6, 6), bool))
    assert (out == 0).all()


def test_all_zero_map_claims_nothing():
    maps = np.zeros((2, 4, 4))
    maps[0, :2] = np.linspace(0.1, 1.0, 8).reshape(2, 4)
    out = _rule(maps, [1, 1], np.zeros((4, 4), bool), tau=0.5)
    assert set(out.unique().tolist()) == {0, 1}
    q = positive_quantile(torch.zeros(1, 10), 0.9)
    assert q.item() == float("inf")


def test_nan_raises_for_tagged_class_only():
    maps = np.zeros((2, 3, 3))
    maps[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(0, 1\)"):
        _rule(maps, [1, 1])
    assert _rule(maps, [1, 0]).shape == (3, 3)  # untagged maps are never read


def test_bad_shapes_and_ranges_raise():
    maps = torch.rand(2, 3, 8, 9)
    tags = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"\(2, 8, 9\).*\(2, 8, 8\)"):
        pseudo_labels(maps, tags, torch.ones(2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        pseudo_labels(maps, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pseudo_labels(maps * 2, tags)
    with pytest.raises(ValueError, match="bool"):
        pseudo_labels(maps, tags, torch.ones(2, 8, 9))


def test_batch_equals_images_one_by_one():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 4, 24, 20, generator=g) ** 3
    tags = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]])
    saliency = torch.rand(3, 24, 20, generator=g) > 0.4
    batch = pseudo_labels(maps, tags, saliency, opening=4)
    for i in range(3):
        assert torch.equal(batch[i], pseudo_labels(maps[i:i + 1], tags[i:i + 1], saliency[i:i + 1], opening=4)[0])


def test_positive_quantile_matches_numpy():
    g = torch.Generator().manual_seed(2)
    values = torch.rand(5, 200, generator=g)
    values[values < 0.4] = 0
    values[1, :150] = 0  # few positives: the topk path; many: the sort path
    values[2] = 0
    values[2, 7] = 0.3  # a single positive
    for tau in (0.0, 0.5, 0.9, 1.0):
        expected = [np.quantile(row[row > 0].numpy().astype(np.float64), tau) for row in values]
        assert np.allclose(positive_quantile(values, tau).numpy(), expected, atol=1e-6)
        assert np.allclose(positive_quantile(values[1:2], tau).numpy(), expected[1:2], atol=1e-6)


def _blobs(rng, H, W, n):
    mask = np.zeros((H, W), np.uint8)
    for _ in range(n):
        y, x = rng.integers(-4, H), rng.integers(-4, W)
        h, w = rng.integers(1, 16, size=2)
        mask[max(y, 0): y + h, max(x, 0): x + w] = 1
    return mask


@pytest.mark.parametrize("size", [3, 5, 10, 4])
def test_opening_matches_opencv(size):
    rng = np.random.default_rng(size)
    masks = np.stack([_blobs(rng, 37, 45, 12) for _ in range(4)])
    ours = binary_opening(torch.from_numpy(masks).bool(), size).numpy()
    kernel = np.ones((size, size), np.uint8)
    anchor = size // 2
    for mask, got in zip(masks, ours):
        if size % 2:
            expected = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        else:  # OpenCV's MORPH_OPEN does not reflect an even kernel for the dilation; we do
            expected = cv2.dilate(cv2.erode(mask, kernel), kernel, anchor=(size - 1 - anchor,) * 2)
        assert np.array_equal(got, expected.astype(bool))
        assert not (got & ~mask.astype(bool)).any()  # an opening is inside the mask
        assert np.array_equal(binary_opening(torch.from_numpy(got)[None], size)[0].numpy(), got)  # idempotent
    assert ours.any()
