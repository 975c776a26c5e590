"""The classification ViT: any timm vit_* / deit_* / hybrid model, random or local weights.

``create_classifier(model_config, num_classes)`` builds the model with timm's dynamic image
size (any input size at run time) and, when ``pretrained`` is set, loads those weights with
``wsss.models.weights.load_pretrained`` (a file or folder in any of its layouts, or hf-hub:
from the local cache; downloaded only with ``allow_download``), with clear errors.
"""

from __future__ import annotations

from functools import partial

import timm
from torch import nn

from wsss.models.errors import PretrainedWeightsError
from wsss.models.weights import load_pretrained

__all__ = ["ConvStem", "PretrainedWeightsError", "create_classifier", "load_pretrained"]


def create_classifier(model_config, num_classes: int) -> nn.Module:
    """A timm ViT with a ``num_classes`` multi-label head (logits, pre-sigmoid).

    model_config: a ``wsss.config.ModelConfig``. Overrides that are None keep the model's own
    value. Raises ValueError for an unknown model name.
    """
    if model_config.name not in timm.list_models():
        close = timm.list_models(f"*{model_config.name.split('_')[0]}*")[:10]
        raise ValueError(f"model.name={model_config.name!r} is not a timm model; similar: {close}")
    kwargs = dict(img_size=model_config.img_size, num_classes=num_classes, dynamic_img_size=True)
    for key in ("patch_size", "embed_dim", "depth", "num_heads"):
        value = getattr(model_config, key)
        if value is not None:
            kwargs[key] = value
    if model_config.conv_stem:  # a small CNN in front of the tokens (timm's HybridEmbed, 1×1 projection)
        from timm.layers import HybridEmbed

        stem = ConvStem(model_config.conv_stem, model_config.conv_stem_extra)
        kwargs.update(patch_size=1, embed_layer=partial(HybridEmbed, backbone=stem))
    if model_config.drop_path_rate:
        kwargs["drop_path_rate"] = model_config.drop_path_rate
    # No warnings.filterwarnings here on purpose: with timm 1.0.31 and torch 2.14.1, creating and
    # running these models (demo, every head, distilled DeiT; training, GETAM, flows) emits no warning
    # (checked under -W default; tests/test_progress.py fails when one appears). A warning known to be
    # harmless gets a filter here, matching its exact message, category and module, with the reason.
    model = timm.create_model(model_config.name, pretrained=False, **kwargs)
    if model_config.pretrained is not None:
        load_pretrained(model, model_config.pretrained, allow_download=model_config.allow_download)
    return model


class ConvStem(nn.Sequential):
    """3×3 stride-2 convolutions with BatchNorm and ReLU (Xiao et al. 2021, "Early convolutions
    help transformers see better"), each followed by ``extra`` 3×3 stride-1 ones:
    B×3×H×W → B×channels[-1]×H/2^L×W/2^L."""

    def __init__(self, channels: list[int], extra: int = 0) -> None:
        layers, previous = [], 3
        for width in channels:
            for stride in (2,) + (1,) * extra:
                layers += [nn.Conv2d(previous, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                previous = width
        super().__init__(*layers)
        self.widths, self.extra = list(channels), extra

    def stride4(self) -> tuple[int, int] | None:
        """(index of the module whose output is the stem's last map at 1/4 of the input, its
        channels), or None for a stem of fewer than two stride-2 convolutions."""
        if len(self.widths) < 2:
            return None
        return 2 * 3 * (1 + self.extra) - 1, self.widths[1]
