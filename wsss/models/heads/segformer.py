"""A SegFormer-style all-MLP decoder (Xie et al., "SegFormer: Simple and Efficient Design for
Semantic Segmentation with Transformers", NeurIPS 2021) on four blocks of a timm ViT.

SegFormer's decoder is four per-pixel linear layers and one fusion: each level's features are
projected to a common width E (a linear layer on every token, i.e. a 1×1 conv on the map),
upsampled to 1/4 of the input, concatenated (4E channels), fused by one 1×1 conv (with BN and
ReLU) back to E, and classified by a last linear layer. SegFormer's own encoder (MiT) gives
the levels at 1/4 … 1/32; a plain ViT gives all four at its patch stride, so here only the
upsampling differs per input and the levels differ by depth, not resolution. Prefix tokens
are dropped. The logits at 1/4 are resized to the input bilinearly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.models.heads.setr import tokens_to_map

__all__ = ["SegformerHead"]


class SegformerHead(nn.Module):
    """Four blocks' tokens → B×(C+1)×H×W logits.

    Args:
        dim: ViT width D.
        num_classes: C foreground classes (C+1 outputs, background first).
        embed: the common width E (SegFormer: 256 for B0, 768 for B1–B5).
        dropout: before the classifier (SegFormer: 0.1).
    """

    def __init__(self, dim: int, num_classes: int, embed: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(dim, embed, kernel_size=1) for _ in range(4))
        self.fuse = nn.Sequential(nn.Conv2d(4 * embed, embed, kernel_size=1, bias=False), nn.BatchNorm2d(embed),
                                  nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(embed, num_classes + 1, kernel_size=1)

    def forward(self, tokens: Sequence[tuple[Tensor, Tensor | None]], grid: tuple[int, int],
                size: Sequence[int]) -> Tensor:
        """tokens: four (B×P×D patches, prefix or None), shallow to deep; grid: (h, w); size:
        the input's (H, W). Returns B×(C+1)×H×W logits."""
        quarter = (max(1, round(size[0] / 4)), max(1, round(size[1] / 4)))
        levels = [F.interpolate(project(tokens_to_map(patches, grid)), size=quarter, mode="bilinear",
                                align_corners=False)
                  for (patches, _), project in zip(tokens, self.project)]
        x = self.classify(self.dropout(self.fuse(torch.cat(levels, dim=1))))
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
