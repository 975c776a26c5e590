"""The segmentation heads on a timm ViT, chosen by ``train.segmenter.head``:

    head = build_head("segformer", settings.segformer, backbone, num_classes=C)

==============  =============================================  =============================
name            what it is                                     module
==============  =============================================  =============================
dpt             DPT (Ranftl et al. 2021): reassemble + fusion  ``wsss.models.heads.dpt``
setr_pup        SETR progressive upsampling (Zheng et al.)     ``wsss.models.heads.setr``
setr_mla        SETR multi-level aggregation                   ``wsss.models.heads.setr``
segformer       SegFormer's all-MLP decoder (Xie et al.)       ``wsss.models.heads.segformer``
mask2former     Mask2Former (Cheng et al. 2022), CPU-sized     ``wsss.models.heads.mask2former``
==============  =============================================  =============================

Every head reads the same four blocks' tokens and returns C+1 classes at input resolution
(``wsss.models.heads.base``); each builder below takes the head's settings section.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from wsss.config import (DptConfig, HeadConfig, Mask2FormerConfig, SegformerConfig, SetrMlaConfig,
                         SetrPupConfig)
from wsss.models.vit_geometry import model_stride
from wsss.models.heads.base import HeadOutput, QueryPredictions
from wsss.models.heads.dpt import DPTHead
from wsss.models.heads.mask2former import Mask2FormerHead
from wsss.models.heads.segformer import SegformerHead
from wsss.models.heads.setr import SetrMlaHead, SetrPupHead

__all__ = ["HEAD_BUILDERS", "HeadOutput", "QueryPredictions", "build_head"]


def _dpt(section: DptConfig, backbone: nn.Module, num_classes: int) -> nn.Module:
    stem_channels = None
    if section.stem_skip:
        stem = getattr(getattr(backbone, "patch_embed", None), "backbone", None)
        found = stem.stride4() if hasattr(stem, "stride4") else None
        if found is None:
            raise ValueError("train.segmenter.dpt.stem_skip needs a conv stem of at least two stride-2 convolutions "
                             "(model.conv_stem, e.g. [32, 64, 128]); this model has none")
        stem_channels = found[1]
    return DPTHead(dim=backbone.embed_dim, stride=model_stride(backbone), num_classes=num_classes,
                   readout=section.readout, features=section.features, channels=section.reassemble_channels,
                   has_prefix=backbone.num_prefix_tokens > 0, head_stride=section.head_stride,
                   stem_channels=stem_channels)


def _setr_pup(section: SetrPupConfig, backbone: nn.Module, num_classes: int) -> nn.Module:
    return SetrPupHead(dim=backbone.embed_dim, num_classes=num_classes, channels=section.channels)


def _setr_mla(section: SetrMlaConfig, backbone: nn.Module, num_classes: int) -> nn.Module:
    return SetrMlaHead(dim=backbone.embed_dim, num_classes=num_classes, channels=section.channels,
                       stream_channels=section.stream_channels)


def _segformer(section: SegformerConfig, backbone: nn.Module, num_classes: int) -> nn.Module:
    return SegformerHead(dim=backbone.embed_dim, num_classes=num_classes, embed=section.embed,
                         dropout=section.dropout)


def _mask2former(section: Mask2FormerConfig, backbone: nn.Module, num_classes: int) -> nn.Module:
    return Mask2FormerHead(dim=backbone.embed_dim, stride=model_stride(backbone), num_classes=num_classes,
                           has_prefix=backbone.num_prefix_tokens > 0, hidden=section.hidden, queries=section.queries,
                           layers=section.layers, heads=section.heads)


HEAD_BUILDERS: dict[str, Callable[[HeadConfig, nn.Module, int], nn.Module]] = {
    "dpt": _dpt, "setr_pup": _setr_pup, "setr_mla": _setr_mla, "segformer": _segformer, "mask2former": _mask2former,
}


def build_head(name: str, section: HeadConfig, backbone: nn.Module, num_classes: int) -> nn.Module:
    """The head ``name`` with the settings ``section`` for ``backbone`` (a timm ViT) and C =
    ``num_classes`` foreground classes."""
    if name not in HEAD_BUILDERS:
        raise ValueError(f"train.segmenter.head={name!r}: expected one of {', '.join(HEAD_BUILDERS)}")
    return HEAD_BUILDERS[name](section, backbone, num_classes)
