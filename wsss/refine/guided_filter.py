"""The guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013) on
class probabilities, with the colour image as the guide.

    probs = guided_filter(images, probs, radius=16, eps=1e-4)   # B×3×H×W in [0, 1], B×K×H×W

In every (2r+1)² window the output is a linear function of the guide's three colours fitted to
the input by least squares (ridge ``eps``), averaged over the windows that cover a pixel. Where
the image has an edge, the output may change across it; where the image is flat, it is smooth.
Applied to a segmenter's averaged softmax, it moves the class boundaries, which the stride-8 or
-16 tokens blur over a few pixels, onto the image's edges, as the dense CRF does, in a fixed
number of box sums per pixel (any radius) on any torch device.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_mean", "guided_filter"]


def _box_sum_1d(x: Tensor, radius: int, dim: int) -> Tensor:
    """Sum over the window [i − r, i + r] ∩ [0, n − 1] along ``dim``, by cumulative sums."""
    n = x.shape[dim]
    total = x.cumsum(dim)
    index = torch.arange(n, device=x.device)
    upper = total.index_select(dim, (index + radius).clamp(max=n - 1))
    below = index - radius - 1
    lower = total.index_select(dim, below.clamp(min=0))
    shape = [1] * x.dim()
    shape[dim] = n
    return upper - lower * (below >= 0).reshape(shape).to(x.dtype)


def box_mean(x: Tensor, radius: int) -> Tensor:
    """x: B×C×H×W → the mean over each pixel's (2r+1)² window, clipped at the borders (B×C×H×W)."""
    ones = torch.ones(1, 1, *x.shape[-2:], dtype=x.dtype, device=x.device)
    count = _box_sum_1d(_box_sum_1d(ones, radius, -2), radius, -1)
    return _box_sum_1d(_box_sum_1d(x, radius, -2), radius, -1) / count


def guided_filter(images: Tensor, probs: Tensor, radius: int, eps: float = 1e-4) -> Tensor:
    """images: B×3×H×W float colours in [0, 1] (the guide); probs: B×K×H×W class probabilities
    → B×K×H×W probabilities (clamped at 0, each pixel's summing to 1). ``radius`` r in pixels
    (window 2r+1), ``eps`` the ridge on the colour covariance (larger: smoother, less edge-bound).
    Computed in float32."""
    if images.shape[0] != probs.shape[0] or images.shape[-2:] != probs.shape[-2:] or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W and probs B×K×H×W of the same B, H, W; got {tuple(images.shape)} "
                         f"and {tuple(probs.shape)}")
    if radius < 1 or eps <= 0:
        raise ValueError(f"radius must be >= 1 and eps > 0, got {radius} and {eps}")
    guide = images.float()
    guide = guide - guide.mean(dim=(-2, -1), keepdim=True)  # centred: the variances lose no precision
    p = probs.float()
    mean_i = box_mean(guide, radius)                                   # B×3×H×W
    mean_p = box_mean(p, radius)                                       # B×K×H×W
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    products = torch.stack([guide[:, i] * guide[:, j] for i, j in pairs], dim=1)
    var = box_mean(products, radius) - torch.stack([mean_i[:, i] * mean_i[:, j] for i, j in pairs], dim=1)
    rr, rg, rb, gg, gb, bb = var.unbind(1)
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    # the inverse of the symmetric 3×3 [[rr, rg, rb], [rg, gg, gb], [rb, gb, bb]] by its adjugate
    inv = torch.stack([gg * bb - gb * gb, rb * gb - rg * bb, rg * gb - rb * gg,
                       rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg], dim=1)
    det = rr * inv[:, 0] + rg * inv[:, 1] + rb * inv[:, 2]
    inv = inv / det.unsqueeze(1)
    i00, i01, i02, i11, i12, i22 = (t.unsqueeze(1) for t in inv.unbind(1))
    cov = [box_mean(guide[:, c:c + 1] * p, radius) - mean_i[:, c:c + 1] * mean_p for c in range(3)]  # 3 × B×K×H×W
    a = [i00 * cov[0] + i01 * cov[1] + i02 * cov[2],
         i01 * cov[0] + i11 * cov[1] + i12 * cov[2],
         i02 * cov[0] + i12 * cov[1] + i22 * cov[2]]
    b = mean_p - sum(a[c] * mean_i[:, c:c + 1] for c in range(3))
    out = sum(box_mean(a[c], radius) * guide[:, c:c + 1] for c in range(3)) + box_mean(b, radius)
    out = out.clamp_min(0.0)
    return out / out.sum(dim=1, keepdim=True).clamp_min(1e-12)
