"""PAMR: the fast version against the slow reference, and its defining properties."""

from __future__ import annotations

import pytest
import torch

from wsss import pamr as top_level_pamr
from wsss.refine import pamr
from wsss.refine.pamr import neighbour_offsets, pamr_affinity
from tests.reference.pamr import pamr_reference


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread avoids OpenMP spin-waits on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(seed: int, B: int, K: int, H: int, W: int, scale: float = 255.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g) * scale, torch.rand(B, K, H, W, generator=g)


@pytest.mark.parametrize("B,K,H,W", [(2, 1, 33, 47), (1, 3, 40, 28), (2, 3, 16, 16)])
def test_matches_reference(B, K, H, W):
    images, masks = _inputs(B * 100 + K, B, K, H, W)
    fast = pamr(images, masks)
    slow = pamr_reference(images, masks)
    assert fast.shape == masks.shape and fast.dtype == masks.dtype
    assert torch.allclose(fast, slow, atol=2e-5, rtol=0), (fast - slow).abs().max()


def test_matches_reference_other_dilations_and_float64():
    images, masks = _inputs(7, 1, 2, 21, 30)
    images, masks = images.double(), masks.double()
    fast = pamr(images, masks, iterations=4, dilations=(1, 3))
    slow = pamr_reference(images, masks, iterations=4, dilations=(1, 3))
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)


def test_image_smaller_than_largest_dilation():
    images, masks = _inputs(3, 1, 2, 9, 13)  # dilation 24 > H, W: replicate padding still defined
    assert torch.allclose(pamr(images, masks), pamr_reference(images, masks), atol=2e-5, rtol=0)


def test_affinity_is_a_distribution_and_scale_free():
    images, _ = _inputs(1, 2, 1, 20, 24)
    a = pamr_affinity(images)
    assert a.shape == (2, 48, 20, 24) and len(neighbour_offsets((1, 2, 4, 8, 12, 24))) == 48
    assert torch.allclose(a.sum(1), torch.ones(2, 20, 24), atol=1e-5)
    assert torch.allclose(a, pamr_affinity(images / 255.0), atol=1e-5)


def test_constant_mask_stays_constant():
    images, _ = _inputs(2, 2, 1, 24, 31)
    masks = torch.full((2, 2, 24, 31), 0.37)
    assert torch.allclose(pamr(images, masks), masks, atol=1e-6)


def test_mask_spreads_on_uniform_region():
    images = torch.zeros(1, 3, 30, 30)
    images[..., 15:] = 200.0  # left half uniform dark, right half uniform bright
    images += torch.rand(images.shape, generator=torch.Generator().manual_seed(0))  # tiny texture
    masks = torch.zeros(1, 1, 30, 30)
    masks[0, 0, 14:16, 5:7] = 1.0  # a seed inside the dark half
    out = pamr(images, masks)[0, 0]
    assert (out[:, :15] > 1e-3).float().mean() > 0.5  # spread across the dark half
    assert out[:, 16:].max() < 1e-3 * out[:, :15].max()  # but not across the edge


def test_channels_are_independent():
    images, masks = _inputs(5, 2, 3, 26, 19)
    assert torch.allclose(pamr(images, masks[:, :2]), pamr(images, masks)[:, :2], atol=1e-6)


def test_zero_iterations_is_identity_and_a_copy():
    images, masks = _inputs(6, 1, 2, 10, 12)
    out = pamr(images, masks, iterations=0)
    assert torch.equal(out, masks) and out.data_ptr() != masks.data_ptr()


def test_uint8_images_and_top_level_export():
    images, masks = _inputs(8, 1, 2, 18, 22)
    images = images.to(torch.uint8)
    assert top_level_pamr is pamr
    assert torch.allclose(pamr(images, masks), pamr_reference(images.float(), masks), atol=2e-5)


def test_bad_inputs_name_the_shapes():
    images, masks = _inputs(9, 1, 2, 10, 12)
    with pytest.raises(ValueError, match=r"\(1, 2, 11, 12\)"):
        pamr(images, torch.rand(1, 2, 11, 12))
    with pytest.raises(ValueError, match="dilations"):
        pamr(images, masks, dilations=(0, 2))
    with pytest.raises(ValueError, match="iterations"):
        pamr(images, masks, iterations=-1)
