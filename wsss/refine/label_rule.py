"""The label rule: normalised class maps + tags (+ saliency) → pseudo-label (DESIGN step 5).

Batched torch on any device, no per-pixel Python; the offline flow and the training loop call
the same :func:`pseudo_labels`. ``LabelRuleConfig``'s fields are its keyword arguments:
``pseudo_labels(maps, tags, saliency, **config.refine.label.model_dump())``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsss.attention.slots import gather_slots, tag_slots
from wsss.data.label_png import IGNORE_INDEX

__all__ = ["pseudo_labels", "positive_quantile", "binary_opening"]


def positive_quantile(values: Tensor, tau: float) -> Tensor:
    """Per-row τ-quantile of the positive entries, linear interpolation (numpy's default).

    Args:
        values: ``P×N`` float.
        tau: quantile in [0, 1].

    Returns:
        ``P`` float; ``+inf`` for a row without positive entries (the quantile of an empty set:
        nothing can be above it).
    """
    positive = values > 0
    count = positive.sum(dim=1)
    position = tau * (count - 1).clamp(min=0).to(torch.float64)
    lo, hi = position.floor().long(), position.ceil().long()
    # Ranks lo and hi among the positives, counted from the top: only the largest
    # max(count − lo) values are needed, and topk is much cheaper than a full sort.
    needed = int((count - lo).max()) if values.numel() else 0
    if 0 < needed <= values.shape[1] // 2:
        top = torch.where(positive, values, -torch.inf).topk(needed, dim=1).values  # descending
        low = top.gather(1, (count - 1 - lo).clamp(min=0)[:, None])[:, 0]
        high = top.gather(1, (count - 1 - hi).clamp(min=0)[:, None])[:, 0]
    else:
        ordered = torch.where(positive, values, torch.inf).sort(dim=1).values  # ascending
        low = ordered.gather(1, lo[:, None])[:, 0]
        high = ordered.gather(1, hi[:, None])[:, 0]
    quantile = low + (high - low) * (position - lo).to(values.dtype)
    return torch.where(count > 0, quantile, torch.inf)


def _max_over_slots(values: Tensor) -> tuple[Tensor, Tensor]:
    """Max and argmax over dim 1 of a ``B×K×H×W`` tensor (K small); ties: the first slot.

    A loop over the K slots: far faster than ``argmax(dim=1)`` on CPU, where a reduction over
    a non-innermost dimension of size 2–3 is slow.
    """
    best = values[:, 0].clone()
    slot = torch.zeros(best.shape, dtype=torch.long, device=values.device)
    for k in range(1, values.shape[1]):
        better = values[:, k] > best
        best = torch.where(better, values[:, k], best)
        slot.masked_fill_(better, k)
    return best, slot


def _window_any(x: Tensor, size: int, before: int, dim: int) -> Tensor:
    """Sliding OR along ``dim`` of a bool tensor: out[i] = any(x[i − before .. i − before + size − 1]).

    Positions outside the tensor count as False. Doubling windows (1, 2, 4, ...) then one
    overlapping OR: ⌈log2 size⌉ bool operations, whatever the size.
    """
    dim = dim % x.ndim
    n = x.shape[dim]
    pads = [x.new_zeros(*x.shape[:dim], k, *x.shape[dim + 1:]) for k in (before, size - 1 - before)]
    x = torch.cat([pads[0], x, pads[1]], dim=dim)  # length n + size − 1
    width = 1
    while 2 * width <= size:  # x[i] = any over [i, i + width)
        length = x.shape[dim] - width
        x = x.narrow(dim, 0, length) | x.narrow(dim, width, length)
        width *= 2
    if width < size:  # two overlapping windows of `width` cover `size`
        x = x.narrow(dim, 0, n) | x.narrow(dim, size - width, n)
    return x


def _square_any(x: Tensor, size: int, before: int) -> Tensor:
    """Square sliding OR over the last two dims of a bool ``B×H×W`` tensor (separable)."""
    return _window_any(_window_any(x, size, before, dim=-2), size, before, dim=-1)


def binary_opening(mask: Tensor, size: int) -> Tensor:
    """Morphological opening of ``B×H×W`` bool masks with a ``size×size`` square, batched.

    Erosion takes the window ``[i - a, i + size - 1 - a]`` with OpenCV's anchor ``a = size // 2``;
    dilation uses the reflected window, so the result is a true opening: contained in ``mask``,
    idempotent. Pixels outside the image take no part (OpenCV's default border). For odd sizes
    this equals ``cv2.morphologyEx(MORPH_OPEN)``; for even sizes OpenCV dilates with the
    unreflected window, which shifts its result one pixel down-right (partly outside the
    mask); ours equals ``cv2.dilate(cv2.erode(m, k), k, anchor=(size - 1 - a,) * 2)``.
    ``size`` 0 or 1 returns a copy.
    """
    if size < 0:
        raise ValueError(f"opening size must be >= 0, got {size}")
    if size <= 1 or mask.numel() == 0:
        return mask.clone()
    a = size // 2
    eroded = ~_square_any(~mask, size, a)  # outside the image counts as inside the mask
    return _square_any(eroded, size, size - 1 - a)


def _check(maps: Tensor, tags: Tensor, saliency: Tensor | None, alpha: float, tau: float, opening: int) -> None:
    if maps.ndim != 4 or not maps.is_floating_point():
        raise ValueError(f"maps must be a B×C×H×W float tensor, got shape {tuple(maps.shape)} dtype {maps.dtype}")
    B, C, H, W = maps.shape
    if tuple(tags.shape) != (B, C):
        raise ValueError(f"tags must be B×C = {(B, C)} to match maps {tuple(maps.shape)}, got {tuple(tags.shape)}")
    if saliency is not None:
        if tuple(saliency.shape) != (B, H, W):
            raise ValueError(f"saliency must be B×H×W = {(B, H, W)} to match maps {tuple(maps.shape)}, "
                             f"got {tuple(saliency.shape)}")
        if saliency.dtype != torch.bool:
            raise ValueError(f"saliency must be a bool tensor (binarise it first), got dtype {saliency.dtype}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    if opening < 0:
        raise ValueError(f"opening must be >= 0 (0: off), got {opening}")


def _check_tagged(M: Tensor, slots: Tensor) -> None:
    """ValueError for NaN or values outside [0, 1] in the tagged (non-empty) slots of ``M``."""
    valid = slots >= 0
    nan = torch.isnan(M).any(dim=(2, 3)) & valid
    if nan.any():
        pairs = [(b, int(slots[b, k])) for b, k in nan.nonzero().tolist()]
        raise ValueError(f"maps contain NaN in tagged (image, class) pairs {pairs[:8]}"
                         f"{' ...' if len(pairs) > 8 else ''}")
    values = M[valid]
    if values.numel():
        low, high = torch.aminmax(values)
        if low < 0 or high > 1:
            raise ValueError(f"tagged maps must be in [0, 1] (normalise each by its max), got range "
                             f"[{low.item():.4g}, {high.item():.4g}]")


@torch.no_grad()
def pseudo_labels(
    maps: Tensor,
    tags: Tensor,
    saliency: Tensor | None = None,
    alpha: float = 32.0,
    tau: float = 0.9,
    conflict: bool = True,
    opening: int = 10,
) -> Tensor:
    """Pseudo-labels from normalised class maps, tags and optional saliency.

    Args:
        maps: ``B×C×H×W`` float in [0, 1], each class map normalised by its max. Channels of
            untagged classes are ignored (treated as 0; they may hold anything, even NaN).
        tags: ``B×C`` multi-hot (> 0 means tagged).
        saliency: ``B×H×W`` bool, True = salient; None: no saliency (see below).
        alpha: background power, bg = (1 − max_c M_c)^α.
        tau: completion quantile.
        conflict: mark pixels claimed by two or more classes as ignore.
        opening: side of the square opening of the non-background mask; 0 (or 1): off.

    Returns:
        ``B×H×W`` int64: 0 = background, c + 1 = class c (channel c of ``maps``), 255 = ignore.

    The rule, with M the maps of the tagged classes (untagged: 0):

    1. bg = (1 − max_c M_c)^α; the *winner* of a pixel is the argmax over [bg, M_1..M_C]
       (ties go to bg, then to the lowest class index), so only tagged classes can win.
    2. Inside the salient region: the winning class; where bg wins: 255.
    3. Outside it: 0, except *completion*: class c *claims* pixel i when M_c(i) > q_c, with
       q_c the τ-quantile (linear interpolation) of the positive values of M_c over the image.
       A claimed pixel outside saliency becomes the claiming class (several claimers: the one
       with the largest M_c(i), lowest index on ties).
    4. Conflict (``conflict=True``): a pixel anywhere in the image, salient or not, claimed
       (step 3's definition) by two or more classes becomes 255.
    5. Opening of the non-background mask (label ≠ 0, i.e. classes and 255) with an
       ``opening×opening`` square (see :func:`binary_opening`); the pixels it removes become 0.

    Without saliency (``saliency=None``): background comes from α alone: every pixel takes its
    winner, bg winning gives 0 (not 255); there is no completion (no non-salient region to
    complete); conflict and opening apply as above.

    Edge cases: an image with no tags is all background (0): its tags say no class is present,
    whatever the saliency says. A tagged class whose map is all zeros has no positive values,
    so its quantile is +inf (the quantile of an empty set): it claims nothing and never wins.
    NaN in a tagged map raises ValueError naming the (image, class) pairs; values of a tagged
    map outside [0, 1] raise ValueError. Saliency of another shape than B×H×W raises
    ValueError naming both shapes.
    """
    _check(maps, tags, saliency, alpha, tau, opening)
    B, _, H, W = maps.shape
    # Work on each image's tagged maps only (K ≪ C); slot k of image b is class slots[b, k].
    slots = tag_slots(tags)
    if slots.shape[1] == 0:
        return torch.zeros(B, H, W, dtype=torch.long, device=maps.device)
    M, valid = gather_slots(maps, slots), slots >= 0
    _check_tagged(M, slots)
    class_id = torch.cat([torch.zeros_like(slots[:, :1]), slots.clamp_min(-1) + 1], dim=1)  # slot + 1 → label

    def to_label(slot: Tensor) -> Tensor:  # B×H×W slot + 1 (0 = background) → label values
        return class_id.gather(1, slot.flatten(1)).view(B, H, W)

    best, best_slot = _max_over_slots(M)  # ties: the first slot (lowest class index)
    bg = (1 - best).pow(alpha)
    winner = torch.where(best > bg, best_slot + 1, 0)

    threshold = torch.full(valid.shape, torch.inf, dtype=M.dtype, device=M.device)
    threshold[valid] = positive_quantile(M[valid].flatten(1), tau)
    claims = M > threshold[:, :, None, None]  # B×K×H×W; never true for unused slots or empty maps

    if saliency is None:
        label = to_label(winner)
    else:
        label = torch.where(saliency, torch.where(winner > 0, to_label(winner), IGNORE_INDEX), 0)
        completion = to_label(_max_over_slots(torch.where(claims, M, -1.0))[1] + 1)
        label = torch.where(~saliency & claims.any(dim=1), completion, label)
    if conflict:
        label = torch.where(claims.sum(dim=1, dtype=torch.int16) >= 2, IGNORE_INDEX, label)
    label = torch.where(valid.any(dim=1)[:, None, None], label, 0)
    if opening > 1:
        foreground = label != 0
        label = torch.where(foreground & ~binary_opening(foreground, opening), 0, label)
    return label
