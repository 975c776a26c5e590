"""What every segmentation head takes and returns (``wsss.models.heads``).

A head reads four blocks of a timm ViT (``forward_intermediates``), shallow to deep::

    tokens = [(patches, prefix), ...]   # 4 × (B×P×D patch tokens, B×p×D prefix tokens or None)
    grid = (h, w)                       # the patch grid, h·w = P
    size = (H, W)                       # the input image's size
    out = head(tokens, grid, size)      # a Tensor B×(C+1)×H×W, or a HeadOutput

Per-pixel heads (DPT, SETR, SegFormer) return the B×(C+1)×H×W logits (channel 0 background).
Mask-classification heads (Mask2Former) return a :class:`HeadOutput`: ``seg`` the semantic
log-probabilities B×(C+1)×H×W (so a softmax gives the class probabilities, as for the others)
and ``queries``, the class and mask predictions of every decoder layer that their loss needs.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["HeadOutput", "QueryPredictions"]


class QueryPredictions(NamedTuple):
    """One decoder layer's predictions of a mask-classification head.

    class_logits: B×N×(K+1) for N queries; K = C+1 semantic classes (0 background, 1..C),
        the last column "no object".
    mask_logits: B×N×h'×w' mask logits at the head's mask resolution (1/4 of the input).
    """

    class_logits: Tensor
    mask_logits: Tensor


class HeadOutput(NamedTuple):
    """seg: B×(C+1)×H×W logits (softmax = class probabilities); queries: per decoder layer,
    first to last, for mask-classification heads (None for per-pixel heads)."""

    seg: Tensor
    queries: list[QueryPredictions] | None = None
