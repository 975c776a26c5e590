"""SETR's two decoders (Zheng et al., "Rethinking Semantic Segmentation from a
Sequence-to-Sequence Perspective with Transformers", CVPR 2021) on a timm ViT.

SETR reads a plain ViT as a sequence-to-sequence encoder: the patch tokens of a block go back
to the h×w patch grid (prefix tokens are dropped) and a convolutional decoder makes the
per-pixel logits. Both decoders take the four blocks' tokens of ``wsss.models.heads.base``.

**PUP**, progressive upsampling (:class:`SetrPupHead`): from the deepest block only, four
stages of conv3×3-BN-ReLU each followed by a 2× bilinear upsampling (1/16 → 1/1 for a /16
ViT), then a 1×1 classifier. Upsampling by 2× at a time is the paper's point: one big jump
blurs. For another stride s the four stages end at 16/s times the input size (2× for s = 8)
and a last bilinear resize brings the logits to H×W (none is needed for s = 16).

**MLA**, multi-level feature aggregation (:class:`SetrMlaHead`): the four blocks' maps, each
projected by a 1×1 conv to ``channels``; a top-down path adds each map to the sum of the
deeper ones (p₄ = x₄, pᵢ = xᵢ + pᵢ₊₁); each stream then goes through two 3×3 convs
(``channels`` → ``channels``/2 → ``stream_channels``) and a bilinear upsampling to 1/4 of the
input; the four streams are concatenated, classified by a 1×1 conv, and resized to H×W.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SetrPupHead", "SetrMlaHead", "tokens_to_map"]


def tokens_to_map(patches: Tensor, grid: tuple[int, int]) -> Tensor:
    """B×P×D patch tokens on an h×w grid (P = h·w) → B×D×h×w."""
    B, P, D = patches.shape
    if P != grid[0] * grid[1]:
        raise ValueError(f"{P} patch tokens do not fill a {grid[0]}×{grid[1]} grid")
    return patches.transpose(1, 2).reshape(B, D, *grid)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SetrPupHead(nn.Module):
    """SETR-PUP: the deepest block's tokens → B×(C+1)×H×W logits.

    Args:
        dim: ViT width D.
        num_classes: C foreground classes (C+1 outputs, background first).
        channels: width of the four upsampling stages (SETR: 256).
    """

    def __init__(self, dim: int, num_classes: int, channels: int = 256) -> None:
        super().__init__()
        self.stages = nn.ModuleList(_conv_bn_relu(dim if i == 0 else channels, channels) for i in range(4))
        self.classify = nn.Conv2d(channels, num_classes + 1, kernel_size=1)

    def forward(self, tokens: Sequence[tuple[Tensor, Tensor | None]], grid: tuple[int, int],
                size: Sequence[int]) -> Tensor:
        """tokens: four (B×P×D patches, prefix or None), shallow to deep (only the last is read);
        grid: (h, w); size: the input's (H, W). Returns B×(C+1)×H×W logits."""
        x = tokens_to_map(tokens[-1][0], grid)
        for stage in self.stages:
            x = F.interpolate(stage(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.classify(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x


class SetrMlaHead(nn.Module):
    """SETR-MLA: four blocks' tokens → B×(C+1)×H×W logits.

    Args:
        dim: ViT width D.
        num_classes: C foreground classes.
        channels: width of the projected maps and the top-down path (SETR: 256).
        stream_channels: width of each stream after its two 3×3 convs (SETR: 128).
    """

    def __init__(self, dim: int, num_classes: int, channels: int = 256, stream_channels: int = 128) -> None:
        super().__init__()
        self.project = nn.ModuleList(_conv_bn_relu(dim, channels, kernel=1) for _ in range(4))
        self.streams = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(channels, max(1, channels // 2)),
                          _conv_bn_relu(max(1, channels // 2), stream_channels))
            for _ in range(4))
        self.classify = nn.Conv2d(4 * stream_channels, num_classes + 1, kernel_size=1)

    def forward(self, tokens: Sequence[tuple[Tensor, Tensor | None]], grid: tuple[int, int],
                size: Sequence[int]) -> Tensor:
        """tokens: four (B×P×D patches, prefix or None), shallow to deep; grid: (h, w); size:
        the input's (H, W). Returns B×(C+1)×H×W logits."""
        maps = [project(tokens_to_map(patches, grid)) for (patches, _), project in zip(tokens, self.project)]
        path = None
        aggregated = [None] * 4
        for i in (3, 2, 1, 0):  # top-down: the deepest first
            path = maps[i] if path is None else maps[i] + path
            aggregated[i] = path
        quarter = (max(1, round(size[0] / 4)), max(1, round(size[1] / 4)))
        streams = [F.interpolate(stream(x), size=quarter, mode="bilinear", align_corners=False)
                   for x, stream in zip(aggregated, self.streams)]
        x = self.classify(torch.cat(streams, dim=1))
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
