"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), computed once, applied fast.

For every pixel i and its 48 neighbours j (the 8 ring pixels of a 3×3 window at each of the
dilations 1, 2, 4, 8, 12, 24; replicate padding at the borders):

    σ_i  = per-colour-channel unbiased std of the 9 window values of every dilation, all
           dilations pooled (54 values, the centre counted once per dilation)
    a_ij = softmax_j( mean_channels( −|I_i − I_j| / (1e-8 + 0.1·σ_i) ) )
    m_i ← Σ_j a_ij m_j        (iterated; the centre is not a neighbour)

The affinities depend on the image only, so they are computed once; every iteration is then a
weighted sum of 48 shifted views of one padded copy of the maps. Channels are independent:
pass only the present classes' maps. The slow reference is in the tests (tests/reference/pamr.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pamr", "pamr_affinity", "neighbour_offsets"]

_RING = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def neighbour_offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    """The (dy, dx) offsets of the neighbours: 8 per dilation, in dilation order."""
    if len(dilations) == 0 or any(int(d) != d or d < 1 for d in dilations):
        raise ValueError(f"dilations must be a non-empty list of positive integers, got {list(dilations)}")
    return [(dy * int(d), dx * int(d)) for d in dilations for dy, dx in _RING]


def _shift(padded: Tensor, pad: int, offset: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """View of ``padded`` (padded by ``pad`` on every side) moved by ``offset``: value at i is x[i + offset]."""
    (dy, dx), (H, W) = offset, size
    return padded[..., pad + dy: pad + dy + H, pad + dx: pad + dx + W]


def pamr_affinity(images: Tensor, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> Tensor:
    """Local affinities of an image batch.

    Args:
        images: ``B×3×H×W``, any value range (the affinity is scale-free); any number of
            colour channels works. Integer images are converted to float32.
        dilations: the 3×3 window dilations; 8 neighbours each.

    Returns:
        ``B×N×H×W`` (N = 8·len(dilations)) in [0, 1], summing to 1 over N; neighbour n is at
        ``neighbour_offsets(dilations)[n]``.
    """
    offsets = neighbour_offsets(dilations)
    if images.ndim != 4:
        raise ValueError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        images = images.float()
    B, _, H, W = images.shape
    pad = max(dilations)
    padded = F.pad(images, [pad] * 4, mode="replicate")
    views = [_shift(padded, pad, o, (H, W)) for o in offsets]

    # σ over 9·len(dilations) values: the centre once per dilation, plus the 48 ring values.
    count = 9 * len(dilations)
    mean = images * len(dilations)
    for v in views:
        mean += v
    mean /= count
    diff = images - mean
    var = diff.square().mul_(len(dilations))
    for v in views:
        torch.sub(v, mean, out=diff)
        var.addcmul_(diff, diff)
    # −mean_channels(|ΔI| / (1e-8 + 0.1σ)) = Σ_channels |ΔI| · scale, scale = −1 / (C·(1e-8 + 0.1σ)).
    scale = var.div_(count - 1).sqrt_().mul_(0.1).add_(1e-8).mul_(images.shape[1]).reciprocal_().neg_()
    del mean

    logits = images.new_empty(B, len(offsets), H, W)
    for n, v in enumerate(views):
        torch.sub(images, v, out=diff)
        logits[:, n] = diff.abs_().mul_(scale).sum(dim=1)
    return torch.softmax(logits, dim=1)


def _fill_border(padded: Tensor, pad: int) -> None:
    """Replicate the interior of ``padded`` (``pad`` pixels on each side) into its border, in place."""
    if pad == 0:
        return
    H, W = padded.shape[-2] - 2 * pad, padded.shape[-1] - 2 * pad
    inner = padded[..., :, pad: pad + W]
    inner[..., :pad, :] = inner[..., pad: pad + 1, :]
    inner[..., pad + H:, :] = inner[..., pad + H - 1: pad + H, :]
    padded[..., :, :pad] = padded[..., :, pad: pad + 1]
    padded[..., :, pad + W:] = padded[..., :, pad + W - 1: pad + W]


@torch.no_grad()
def pamr(
    images: Tensor,
    masks: Tensor,
    iterations: int = 10,
    dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
) -> Tensor:
    """Refine class maps with PAMR (not differentiable: runs under ``torch.no_grad``).

    Args:
        images: ``B×3×H×W``, any value range and dtype (converted to the masks' dtype).
        masks: ``B×K×H×W`` float maps to refine, e.g. the K present classes' maps in [0, 1].
            Channels are independent; only the channels given are computed.
        iterations: propagation steps (0 returns a copy of ``masks``).
        dilations: 3×3 window dilations (8 neighbours each); replicate padding.

    Returns:
        ``B×K×H×W`` refined maps, same dtype and device as ``masks``. Each step is a convex
        combination of neighbours, so values stay within the input's range.
    """
    if images.ndim != 4 or masks.ndim != 4:
        raise ValueError(f"images must be B×3×H×W and masks B×K×H×W, got shapes "
                         f"{tuple(images.shape)} and {tuple(masks.shape)}")
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} must share "
                         f"batch size and H×W")
    if not masks.is_floating_point():
        raise ValueError(f"masks must be a floating-point tensor, got dtype {masks.dtype}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    offsets = neighbour_offsets(dilations)
    if iterations == 0 or masks.numel() == 0:
        return masks.clone()

    affinity = pamr_affinity(images.to(masks.dtype), dilations)
    B, K, H, W = masks.shape
    pad = max(dilations)
    padded = masks.new_empty(B, K, H + 2 * pad, W + 2 * pad)
    out = masks.new_empty(B, K, H, W)
    weights = [affinity[:, n: n + 1] for n in range(len(offsets))]  # B×1×H×W, broadcast over K
    current = masks
    for _ in range(iterations):
        padded[..., pad: pad + H, pad: pad + W] = current
        _fill_border(padded, pad)
        torch.mul(_shift(padded, pad, offsets[0], (H, W)), weights[0], out=out)
        for offset, weight in zip(offsets[1:], weights[1:]):
            out.addcmul_(_shift(padded, pad, offset, (H, W)), weight)
        current = out
    return out
