"""Slow reference PAMR, written straight from the equations. For tests and benchmarks only.

It works the way the paper's code does: neighbour values are gathered with one-hot 3×3
dilated convolutions (one per dilation, replicate padding), all 48 neighbours of every
channel are stacked into a ``B×K×48×H×W`` tensor, and this is redone at every iteration.
Run it on all C class channels, as the paper's code does, to reproduce its cost.
Use :func:`wsss.refine.pamr` for real work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pamr_reference"]

# (dy, dx) of the 3×3 window in row-major order; index 4 is the centre.
_WINDOW = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_RING = [offset for offset in _WINDOW if offset != (0, 0)]


def _gather(x: Tensor, dilation: int, offsets: list[tuple[int, int]]) -> Tensor:
    """B×K×H×W → B×K×len(offsets)×H×W: x at (i + dy·d, j + dx·d), replicate padding."""
    B, K, H, W = x.shape
    weight = x.new_zeros(len(offsets), 1, 3, 3)
    for n, (dy, dx) in enumerate(offsets):
        weight[n, 0, dy + 1, dx + 1] = 1.0
    padded = F.pad(x, [dilation] * 4, mode="replicate")
    out = F.conv2d(padded.reshape(B * K, 1, *padded.shape[-2:]), weight, dilation=dilation)
    return out.reshape(B, K, len(offsets), H, W)


def _affinity(images: Tensor, dilations: Sequence[int]) -> Tensor:
    """B×3×H×W → B×1×48×H×W affinities (softmax over the 48 neighbours)."""
    window = torch.cat([_gather(images, d, _WINDOW) for d in dilations], dim=2)  # B×3×54×H×W
    sigma = window.std(dim=2, keepdim=True)  # unbiased, over all dilations' 9 values
    ring = torch.cat([_gather(images, d, _RING) for d in dilations], dim=2)  # B×3×48×H×W
    logits = -(images.unsqueeze(2) - ring).abs() / (1e-8 + 0.1 * sigma)
    return torch.softmax(logits.mean(dim=1, keepdim=True), dim=2)


def pamr_reference(
    images: Tensor, masks: Tensor, iterations: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)
) -> Tensor:
    """PAMR from the equations: B×3×H×W images, B×K×H×W masks → B×K×H×W refined masks."""
    images = images.to(masks.dtype)
    affinity = _affinity(images, dilations)
    for _ in range(iterations):
        neighbours = torch.cat([_gather(masks, d, _RING) for d in dilations], dim=2)
        masks = (neighbours * affinity).sum(dim=2)
    return masks
