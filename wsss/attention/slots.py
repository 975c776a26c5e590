"""Tag slots: each image's tagged classes packed to the left, the one packing every step uses.

A batch of B images with C classes, where image i carries k_i tags, is handled on K = max k_i
*slots*: slot k of image i is its k-th tagged class (ascending class index) or -1 (empty).
The batched GETAM backward runs once per slot, PAMR runs on the slot maps only (K ≪ C), and
the label rule compares the slot maps.

    slots = tag_slots(tags)                        # B×K long, -1 = empty
    present = gather_slots(maps, slots)            # B×C×H×W → B×K×H×W (empty slots: 0)
    maps = scatter_slots(present, slots, C)        # back to B×C×H×W (untagged classes: 0)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tag_slots", "gather_slots", "scatter_slots"]


def tag_slots(labels: Tensor) -> Tensor:
    """Tagged class indices per image, packed left: ``B×C`` multi-hot → ``B×K`` long.

    ``slots[i, k]`` is the k-th tagged class of image i (ascending class order) or -1 when
    image i has fewer than k+1 tags; K = max number of tags per image (0 if none).
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be B×C multi-hot, got shape {tuple(labels.shape)}")
    present = labels > 0
    counts = present.sum(1)
    k = int(counts.max()) if labels.shape[0] else 0
    # stable sort puts tagged classes first, in ascending class order
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :k]
    valid = torch.arange(k, device=labels.device)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.full_like(order, -1))


def gather_slots(maps: Tensor, slots: Tensor) -> Tensor:
    """``B×C×H×W`` maps, ``B×K`` slots → ``B×K×H×W`` (empty slots: zeros, whatever the maps
    hold there, NaN included)."""
    index = slots.clamp_min(0)[:, :, None, None].expand(-1, -1, *maps.shape[-2:])
    picked = maps.gather(1, index)
    return torch.where((slots >= 0)[:, :, None, None], picked, torch.zeros((), dtype=maps.dtype, device=maps.device))


def scatter_slots(values: Tensor, slots: Tensor, num_classes: int) -> Tensor:
    """``B×K×H×W`` values of the slot classes → ``B×C×H×W`` (classes in no slot: zeros)."""
    out = values.new_zeros(values.shape[0], num_classes + 1, *values.shape[-2:])
    index = torch.where(slots >= 0, slots, num_classes)[:, :, None, None].expand_as(values)
    return out.scatter(1, index, values)[:, :num_classes]
