"""The DPT head (Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021) on four
blocks of a timm ViT (``wsss.models.heads``; the model around it is ``wsss.models.segmentation_model``).

The head, from the ViT's tokens (B×(p+P)×D: p prefix tokens, P = h·w patches, grid stride s):

1. **Reassemble** each of the four blocks' tokens: the readout handles the prefix tokens
   (``ignore``: dropped; ``add``: their mean added to every patch token; ``project``: their
   mean concatenated to every patch token, then Linear(2D→D) + GELU), the patch tokens go back
   to the h×w grid, a 1×1 conv sets the channels, and a resampling brings block i to 1/4, 1/8,
   1/16, 1/32 of the input (transposed conv for upsampling, strided conv for downsampling, as
   DPT does for s = 16; any other stride, e.g. 8 or the hybrids' 32, gets the matching
   factors; a non-integer factor, e.g. s = 14, bilinear interpolation).
2. **Fusion**, RefineNet style: a 3×3 conv brings each map to ``features`` channels; from the
   deepest up, each fusion block adds a residual conv unit of its skip map, applies a second
   one, upsamples to the next finer map's size and mixes with 1×1. The last block ends at 1/4
   (``head_stride`` 4, the default) or upsamples ×2 to 1/2 (``head_stride`` 2, the original
   DPT: its last 1×1 and the head's 3×3 conv then see 4× the pixels, ~60% more compute for
   the whole head, which on 2 CPU cores dominates a DeiT-S training step at 224).
3. **Head**: conv3×3-BN-ReLU-dropout(0.1)-conv1×1 → C+1 logits, bilinearly upsampled to H×W.

Works for every timm ``VisionTransformer``: vit_* (1 prefix token), distilled deit_* (2), hybrid
vit_*_r50_* / vit_tiny_r_s16_p8_224 (a CNN stem in front of the tokens), any patch size. The
features come from timm's ``forward_intermediates`` (no copy of timm's code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DPTHead", "READOUTS", "Reassemble", "TARGET_STRIDES", "resampler"]

READOUTS = ("ignore", "add", "project")
TARGET_STRIDES = (4, 8, 16, 32)  # the four reassembled maps: 1/4 ... 1/32 of the input


class Readout(nn.Module):
    """Prefix-token handling of one reassemble stage: B×P×D patch tokens, B×p×D prefix tokens
    → B×P×D tokens (see the module docstring for the three modes)."""

    def __init__(self, mode: str, dim: int) -> None:
        super().__init__()
        if mode not in READOUTS:
            raise ValueError(f"readout {mode!r}: expected one of {', '.join(READOUTS)}")
        self.mode = mode
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU()) if mode == "project" else None

    def forward(self, patches: Tensor, prefix: Tensor | None) -> Tensor:
        if self.mode == "ignore":
            return patches
        readout = prefix.mean(dim=1, keepdim=True)  # B×1×D: cls (and dist) token
        if self.mode == "add":
            return patches + readout
        return self.project(torch.cat([patches, readout.expand_as(patches)], dim=-1))


class Interpolate(nn.Module):
    """Bilinear resampling by a fixed factor (for strides that are not powers of each other)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


def resampler(channels: int, stride: int, target: int) -> nn.Module:
    """Map at 1/``stride`` of the input → 1/``target``: B×c×h×w → B×c×h'×w'.

    stride > target (integer ratio f): ConvTranspose2d(f, stride f); equal: identity;
    target > stride (integer ratio r): Conv2d(2r−1, stride r, padding r−1) (3×3 stride 2 for
    r = 2, as DPT); otherwise bilinear interpolation by stride / target.
    """
    if stride == target:
        return nn.Identity()
    if stride > target and stride % target == 0:
        f = stride // target
        return nn.ConvTranspose2d(channels, channels, kernel_size=f, stride=f)
    if target > stride and target % stride == 0:
        r = target // stride
        return nn.Conv2d(channels, channels, kernel_size=2 * r - 1, stride=r, padding=r - 1)
    return Interpolate(stride / target)


class Reassemble(nn.Module):
    """One reassemble stage: B×P×D patch tokens (+ B×p×D prefix) on an h×w grid →
    B×channels×h'×w' at 1/``target`` of the input."""

    def __init__(self, dim: int, channels: int, readout: str, stride: int, target: int) -> None:
        super().__init__()
        self.readout = Readout(readout, dim)
        self.project = nn.Conv2d(dim, channels, kernel_size=1)
        self.resample = resampler(channels, stride, target)

    def forward(self, patches: Tensor, prefix: Tensor | None, grid: tuple[int, int]) -> Tensor:
        tokens = self.readout(patches, prefix)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
        return self.resample(self.project(x))


class ResidualConvUnit(nn.Module):
    """x + conv-BN(ReLU(conv-BN(ReLU(x)))), 3×3 convs, channels and size kept: B×F×h×w."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
            nn.ReLU(), nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class FusionBlock(nn.Module):
    """RefineNet-style fusion: (path + RCU(skip)) → RCU → resize → 1×1 conv; B×F×h×w in,
    B×F×size out (path is resized to the skip's size first when they differ)."""

    def __init__(self, features: int, has_skip: bool) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(features) if has_skip else None
        self.unit = ResidualConvUnit(features)
        self.out = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, path: Tensor, skip: Tensor | None, size: Sequence[int]) -> Tensor:
        if skip is not None:
            if path.shape[-2:] != skip.shape[-2:]:
                path = F.interpolate(path, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            path = path + self.skip_unit(skip)
        path = self.unit(path)
        if tuple(path.shape[-2:]) != tuple(size):
            path = F.interpolate(path, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out(path)


class DPTHead(nn.Module):
    """Four blocks' tokens → B×(C+1)×H×W segmentation logits.

    Args:
        dim: ViT width D.
        stride: input pixels per patch token (16 for */16, 32 for vit_tiny_r_s16_p8).
        num_classes: C foreground classes (the head predicts C+1, background first).
        readout: "ignore", "add" or "project" ("add"/"project" need prefix tokens).
        features: channels of the fusion stages and the head (DPT: 256).
        channels: channels of the four reassembled maps (None: D/8, D/4, D/2, D).
        has_prefix: whether the ViT has prefix tokens (cls, dist).
        head_stride: the head runs at 1/4 (4) or, as the original DPT, at 1/2 (2) of the input.
    """

    def __init__(
        self,
        dim: int,
        stride: int,
        num_classes: int,
        readout: str = "project",
        features: int = 256,
        channels: Sequence[int] | None = None,
        has_prefix: bool = True,
        head_stride: int = 4,
        stem_channels: int | None = None,
    ) -> None:
        super().__init__()
        if head_stride not in (2, 4):
            raise ValueError(f"head_stride {head_stride}: expected 2 (the original DPT) or 4")
        self.head_stride = head_stride
        if readout != "ignore" and not has_prefix:
            raise ValueError(f"readout {readout!r} needs prefix tokens (cls); this ViT has none: use 'ignore'")
        channels = list(channels) if channels is not None else [max(8, dim // 8), max(8, dim // 4), max(8, dim // 2), dim]
        if len(channels) != 4:
            raise ValueError(f"channels must list 4 values (one per reassembled map), got {channels}")
        self.reassemble = nn.ModuleList(
            Reassemble(dim, c, readout, stride, t) for c, t in zip(channels, TARGET_STRIDES)
        )
        self.to_features = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1, bias=False) for c in channels)
        self.fusion = nn.ModuleList(FusionBlock(features, has_skip=i < 3) for i in range(4))
        self.uses_stem = stem_channels is not None
        self.stem_project = nn.Conv2d(stem_channels, features, 3, padding=1, bias=False) if self.uses_stem else None
        self.stem_unit = ResidualConvUnit(features) if self.uses_stem else None
        self.head = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), nn.ReLU(),
            nn.Dropout(0.1), nn.Conv2d(features, num_classes + 1, kernel_size=1),
        )

    def forward(
        self, tokens: Sequence[tuple[Tensor, Tensor | None]], grid: tuple[int, int], size: Sequence[int],
        stem: Tensor | None = None,
    ) -> Tensor:
        """tokens: four (B×P×D patch tokens, B×p×D prefix tokens or None), shallow to deep;
        grid: (h, w) with h·w = P; size: the input's (H, W); stem: with ``stem_channels``, the conv
        stem's B×stem_channels×H/4×W/4 map (added to the last fusion stage's output through a 3×3
        conv and a residual unit). Returns B×(C+1)×H×W logits."""
        maps = [conv(stage(patches, prefix, grid))
                for (patches, prefix), stage, conv in zip(tokens, self.reassemble, self.to_features)]
        path = None
        for i in (3, 2, 1, 0):  # deepest first; block i's skip is maps[i]
            finer = maps[i - 1].shape[-2:] if i > 0 else [n * 4 // self.head_stride for n in maps[0].shape[-2:]]
            path = self.fusion[i](maps[i] if path is None else path, None if path is None else maps[i], finer)
        if self.uses_stem:
            if stem is None:
                raise ValueError("this DPT head reads the conv stem's map at 1/4 (stem_skip); none was given")
            detail = self.stem_project(stem)
            if detail.shape[-2:] != path.shape[-2:]:
                detail = F.interpolate(detail, size=path.shape[-2:], mode="bilinear", align_corners=False)
            path = path + self.stem_unit(detail)
        return F.interpolate(self.head(path), size=tuple(size), mode="bilinear", align_corners=False)
