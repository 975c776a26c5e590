"""Slow reference GETAM: the paper's per-image, per-class loop. For tests and benchmarks only.

One forward of the batch, then for every image i and every tagged class c:
``model.zero_grad(); logits[i, c].backward(retain_graph=True)`` and GETAM from the full
heads×N×N attention and its ``.grad`` of image i — B×K full backward passes, each as large as
the whole batch. Parameters' ``.grad`` are restored afterwards. Use :func:`wsss.getam`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.attention.base import eval_mode
from wsss.models.attention_capture import AttentionCapture, vit_blocks
from wsss.models.vit_geometry import token_layout

__all__ = ["getam_reference"]


def getam_reference(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    start_block: int | None = None,
    image_indices: Sequence[int] | None = None,
) -> Tensor:
    """GETAM by the per-(image, class) backward loop.

    Args:
        model, images (``B×3×H×W``), labels (``B×C``), start_block: as :func:`wsss.getam`.
        image_indices: loop over these images only (benchmarks time a subset at large B);
            the others' maps stay zero.

    Returns:
        ``B×C×H×W`` float.
    """
    depth = len(vit_blocks(model))
    start = depth // 2 if start_block is None else start_block % depth
    H, W = images.shape[-2:]
    layout = token_layout(model, (H, W))
    p = layout.num_prefix_tokens
    out = images.new_zeros(images.shape[0], labels.shape[1], H, W)
    saved = [(q, None if q.grad is None else q.grad.clone()) for q in model.parameters()]
    indices = range(images.shape[0]) if image_indices is None else image_indices
    with eval_mode(model), torch.enable_grad(), \
            AttentionCapture(model, blocks=range(start, depth), requires_grad=True) as cap:
        logits = model(images)
        attns = cap.attentions
        for a in attns:
            a.retain_grad()
        for i in indices:
            for c in torch.nonzero(labels[i] > 0).flatten().tolist():
                model.zero_grad()
                for a in attns:
                    a.grad = None
                logits[i, c].backward(retain_graph=True)
                cam = 0
                for a in attns:
                    g, att = a.grad[i], a[i].detach()  # heads×N×N
                    cam = cam + (g * att).clamp(min=0).mean(0) * g.clamp(min=0).mean(0)
                cam = cam.clamp(min=0)[0, p:].reshape(1, 1, *layout.grid)
                out[i, c] = F.interpolate(cam, size=(H, W), mode="bilinear",
                                          align_corners=True)[0, 0]
    for q, g in saved:
        q.grad = g
    return out
