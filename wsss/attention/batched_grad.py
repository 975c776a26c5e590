"""One batched backward for every (image, tagged class) pair of a batch.

Images of a ViT batch are independent after the patch embedding, so ∂y[i, c]/∂T[j] = 0 for
i ≠ j (T any per-image tensor of the transformer: attention, tokens). Hence one backward whose
output gradient selects, for every image at once, the logit of its k-th tag yields the
per-image gradients of all B images for that "tag slot". K slots (K = max tags per image) are
stacked as a leading batch dimension and run through a single
``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the backward): the work grows
with K, not with B×K as in the per-image per-class loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["slot_gradients", "slot_selector"]


def slot_selector(slots: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Output gradients of the K slots: ``K×B×C``, one-hot at each image's k-th tag (zero row
    for an image without a k-th tag)."""
    B, K = slots.shape
    sel = torch.zeros(K, B, num_classes, dtype=dtype, device=slots.device)
    k_idx, b_idx = torch.nonzero(slots.T >= 0, as_tuple=True)
    sel[k_idx, b_idx, slots[b_idx, k_idx]] = 1
    return sel


def slot_gradients(
    logits: Tensor,
    slots: Tensor,
    inputs: Sequence[Tensor],
    retain_graph: bool = False,
) -> list[Tensor]:
    """∂(logit of each image's k-th tag)/∂input, for every slot k, in one batched backward.

    Args:
        logits: ``B×C`` pre-sigmoid class logits, attached to the graph.
        slots: ``B×K`` from :func:`wsss.attention.slots.tag_slots`.
        inputs: per-image tensors ``B×…`` the logits depend on (captured attention/tokens).
        retain_graph: keep the graph for a later backward (training's second backward). The
            vmapped call always keeps it, so that the per-slot fallback (an op without a vmap
            rule in another torch version: a RuntimeError, warned) can still run; the graph is
            freed when the caller drops the logits and captured tensors.

    Returns:
        one ``K×B×…`` tensor per input (entries of images without a k-th tag are zero).
        Parameters' ``.grad`` are untouched (``autograd.grad`` accumulates nothing) and the
        backward stops at the earliest requested input.
    """
    K = slots.shape[1]
    if K == 0:
        return [t.new_zeros((0, *t.shape)) for t in inputs]
    sel = slot_selector(slots, logits.shape[1], logits.dtype)
    if K == 1:  # no vmap needed
        grads = torch.autograd.grad(logits, inputs, sel[0], retain_graph=retain_graph)
        return [g.unsqueeze(0) for g in grads]
    try:
        return list(torch.autograd.grad(logits, inputs, sel, retain_graph=True,
                                        is_grads_batched=True))
    except RuntimeError as err:  # an op without a vmap rule in this torch version
        warnings.warn(f"batched backward failed ({err}); falling back to one backward per "
                      "tag slot (still ∝ K, slower)", RuntimeWarning, stacklevel=2)
    per_slot = [
        torch.autograd.grad(logits, inputs, sel[k], retain_graph=retain_graph or k < K - 1)
        for k in range(K)
    ]
    return [torch.stack(gs) for gs in zip(*per_slot)]
