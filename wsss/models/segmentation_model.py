"""The segmenter: a timm ViT classifier with a segmentation head (``wsss.models.heads``) on four
of its blocks.

One forward gives both outputs, so the same model serves GETAM (class logits, attention) and
segmentation (per-pixel logits)::

    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=C)
    out = segmenter(images)            # images: B×3×H×W, H and W multiples of segmenter.stride
    out.logits                         # B×C class logits (pre-sigmoid), the classifier's head
    out.seg                            # B×(C+1)×H×W segmentation logits, channel 0 = background
    out.queries                        # mask2former: every decoder layer's predictions (its loss)

The head is ``segmenter.decoder`` whatever its kind (DPT, SETR-PUP/MLA, SegFormer,
Mask2Former); ``segmenter.head_name`` says which. Works for every timm ``VisionTransformer``:
vit_* (1 prefix token), distilled deit_* (2), hybrids, any patch size. The features come from
timm's ``forward_intermediates`` (no copy of timm's code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from wsss.config import HeadConfig, ModelConfig
from wsss.models.attention_capture import vit_blocks
from wsss.models.vit_geometry import model_stride, token_layout
from wsss.models.classifier import create_classifier
from wsss.models.heads import HeadOutput, QueryPredictions, build_head

__all__ = ["Segmenter", "SegmenterOutput", "create_segmenter", "default_blocks"]


def default_blocks(depth: int) -> list[int]:
    """Four evenly spaced block indices ending at the last block: 12 blocks → [2, 5, 8, 11],
    24 → [5, 11, 17, 23]; fewer than 4 blocks repeat indices (depth 2 → [0, 0, 0, 1])."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return [max(0, (i + 1) * depth // 4 - 1) for i in range(4)]


class SegmenterOutput(NamedTuple):
    """logits: B×C class logits (pre-sigmoid); seg: B×(C+1)×H×W segmentation logits (channel 0
    background; softmax = class probabilities), or None when the head was skipped; queries:
    a mask-classification head's per-layer predictions (``wsss.models.heads.base``), else None."""

    logits: Tensor
    seg: Tensor | None
    queries: list[QueryPredictions] | None = None


class Segmenter(nn.Module):
    """A timm ViT classifier (``backbone``, keeps its classification head) plus a head
    (``decoder``) named ``head_name``.

    blocks: the four block indices the head reads, shallow to deep (repeats allowed).
    ``stride``: input pixels per patch token; inputs must be multiples of it (any size
    otherwise: timm's dynamic image size; ``wsss.predict`` resizes arbitrary images).
    """

    def __init__(self, backbone: nn.Module, decoder: nn.Module, blocks: Sequence[int], head_name: str = "dpt") -> None:
        super().__init__()
        depth = len(vit_blocks(backbone))
        blocks = [int(b) + depth if int(b) < 0 else int(b) for b in blocks]
        if len(blocks) != 4 or any(not 0 <= b < depth for b in blocks) or blocks != sorted(blocks):
            raise ValueError(f"blocks must be 4 ascending indices in 0..{depth - 1} (negative: from the end), "
                             f"got {blocks}")
        self.backbone, self.decoder, self.blocks, self.head_name = backbone, decoder, blocks, head_name
        self._unique = sorted(set(blocks))
        self.stride = model_stride(backbone)
        self._stem: list[Tensor] = []  # the conv stem's 1/4 map, kept during forward() for heads with uses_stem
        if getattr(decoder, "uses_stem", False):
            stem = backbone.patch_embed.backbone
            stem[stem.stride4()[0]].register_forward_hook(self._keep_stem)

    def forward(self, images: Tensor, with_head: bool = True) -> SegmenterOutput:
        """images: B×3×H×W normalised; with_head=False skips the segmentation head (seg is None)."""
        if images.dim() != 4:
            raise ValueError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
        self._stem = [None]  # a slot: only this forward's stem map is kept (other backbone calls keep nothing)
        try:
            final, intermediates = self.backbone.forward_intermediates(
                images, indices=self._unique, return_prefix_tokens=True, output_fmt="NLC")
            stem = self._stem[0]
        finally:
            self._stem = []
        logits = self.backbone.forward_head(final)
        if not with_head:
            return SegmenterOutput(logits, None)
        if self.backbone.num_prefix_tokens == 0:  # timm returns plain tensors then
            intermediates = [(t, None) for t in intermediates]
        by_block = dict(zip(self._unique, intermediates))
        grid = token_layout(self.backbone, images.shape[-2:]).grid
        extra = {"stem": stem} if getattr(self.decoder, "uses_stem", False) else {}
        out = self.decoder([by_block[b] for b in self.blocks], grid, images.shape[-2:], **extra)
        if isinstance(out, HeadOutput):
            return SegmenterOutput(logits, out.seg, out.queries)
        return SegmenterOutput(logits, out)

    def _keep_stem(self, module: nn.Module, inputs, output: Tensor) -> None:
        if self._stem:
            self._stem[0] = output

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the new layers: the segmentation head and the classification head(s)."""
        return [(n, p) for n, p in self.named_parameters() if _is_head(n)]

    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything else (patch embedding, blocks, norms, tokens)."""
        return [(n, p) for n, p in self.named_parameters() if not _is_head(n)]


def _is_head(name: str) -> bool:
    return name.startswith(("decoder.", "backbone.head.", "backbone.head_dist."))


def create_segmenter(model_config: ModelConfig, head: str, head_config: HeadConfig, num_classes: int) -> Segmenter:
    """A Segmenter from a ``model`` section (the ViT, random or ``pretrained`` weights), a head
    name (``train.segmenter.head``) and its section; C = ``num_classes`` foreground classes."""
    backbone = create_classifier(model_config, num_classes)
    depth = len(vit_blocks(backbone))
    blocks = head_config.blocks if head_config.blocks is not None else default_blocks(depth)
    return Segmenter(backbone, build_head(head, head_config, backbone, num_classes), blocks, head)
