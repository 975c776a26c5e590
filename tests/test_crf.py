"""Dense CRF: it fixes label noise along a colour edge; the pool equals in-process; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.config import CrfConfig
from wsss.refine import start_crf_label_maps
from wsss.refine.crf import label_probs, start_crf_pseudo_labels


def _two_regions(seed: int, H: int = 40, W: int = 56, flip: float = 0.25):
    """An RGB image (red left, blue right, mild texture), its true labels, and noisy probabilities."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((H, W), np.int64)
    truth[:, W // 2 + seed % 5:] = 1
    image = np.where(truth[..., None] == 0, [200, 40, 30], [30, 50, 210]).astype(np.int64)
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    noisy = np.where(rng.random((H, W)) < flip, 1 - truth, truth)
    probs = np.stack([np.where(noisy == 0, 0.65, 0.35), np.where(noisy == 1, 0.65, 0.35)]).astype(np.float32)
    return image, truth, noisy, probs


def crf_refine(image, probs, config=None):
    """One image through the CRF."""
    return start_crf_label_maps([image], [probs], config)()[0]


def test_crf_fixes_noise_along_the_colour_edge():
    image, truth, noisy, probs = _two_regions(0)
    out = crf_refine(image, probs, CrfConfig())
    assert out.shape == truth.shape and out.dtype == np.int64
    before, after = (noisy != truth).mean(), (out != truth).mean()
    assert before > 0.2 and after < 0.02, (before, after)


def test_pool_equals_in_process():
    items = [_two_regions(seed, H=30 + seed, W=40) for seed in range(5)]
    images, probs = [it[0] for it in items], [it[3] for it in items]
    local = start_crf_label_maps(images, probs, CrfConfig(workers=1))()
    pooled = start_crf_label_maps(images, probs, CrfConfig(workers=2))()
    assert len(pooled) == 5
    for a, b, image in zip(local, pooled, images):
        assert a.shape == image.shape[:2] and np.array_equal(a, b)


def test_pseudo_label_crf_keeps_ignore_and_class_ids():
    image, truth, noisy, _ = _two_regions(2)
    label = np.where(noisy == 1, 7, 0).astype(np.uint8)  # class id 7 (index 1 of the CRF labels)
    label[:4] = 255
    values, probs = label_probs(label)
    assert values.tolist() == [0, 7] and probs.shape == (2, *label.shape)
    assert np.allclose(probs[:, :4], 0.5) and np.allclose(probs.sum(0), 1)
    out = start_crf_pseudo_labels([image], [label], CrfConfig(workers=1))()[0]
    assert out.dtype == np.uint8 and (out[:4] == 255).all()
    assert set(np.unique(out[4:])) <= {0, 7}
    assert (out[4:] != truth[4:] * 7).mean() < 0.5 * (label[4:] != truth[4:] * 7).mean()
    # a label without classes comes back unchanged
    empty = np.zeros_like(label)
    empty[0, 0] = 255
    assert np.array_equal(start_crf_pseudo_labels([image], [empty])()[0], empty)


def test_errors_name_the_bad_shape():
    image, _, _, probs = _two_regions(3)
    with pytest.raises(ValueError, match=r"\(40, 56\)"):
        crf_refine(image[..., 0], probs)
    with pytest.raises(ValueError, match=r"uint8"):
        crf_refine(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match=r"\(2, 40, 55\)"):
        crf_refine(image, probs[..., :55])
    with pytest.raises(ValueError, match=r"item 1: .*\(2, 40, 55\)"):
        start_crf_label_maps([image, image], [probs, probs[..., :55]])()
    with pytest.raises(ValueError, match="NaN"):
        crf_refine(image, np.full_like(probs, np.nan))
