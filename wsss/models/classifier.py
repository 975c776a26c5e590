"""The classification ViT: any timm vit_* / deit_* / hybrid model, random or local weights.

``create_classifier(model_config, num_classes)`` builds the model with timm's dynamic image
size (any input size at run time) and, when ``pretrained`` names a local file, loads it with
clear errors. Nothing is ever downloaded.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import timm
import torch
from torch import nn

from wsss.models.errors import PretrainedWeightsError

_HEAD_PREFIXES = ("head.", "head_dist.", "fc_norm.")


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

        kwargs.update(patch_size=1, embed_layer=partial(HybridEmbed, backbone=ConvStem(model_config.conv_stem)))
    if model_config.drop_path_rate:
        kwargs["drop_path_rate"] = model_config.drop_path_rate
    model = timm.create_model(model_config.name, pretrained=False, **kwargs)
    if model_config.pretrained is not None:
        load_pretrained(model, model_config.pretrained)
    return model


class ConvStem(nn.Sequential):
    """3×3 stride-2 convolutions with BatchNorm and ReLU (Xiao et al. 2021, "Early convolutions
    help transformers see better"): B×3×H×W → B×channels[-1]×H/2^L×W/2^L."""

    def __init__(self, channels: list[int]) -> None:
        layers, previous = [], 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            previous = width
        super().__init__(*layers)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(f"model.pretrained: weights file {path} not found (nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise PretrainedWeightsError(f"model.pretrained: cannot read {path} as a torch checkpoint ({error})") from error
    for key in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"model.pretrained: {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load backbone weights from a local file into ``model``.

    The classification head is skipped when its shape differs (another number of classes);
    position embeddings of another grid size are resampled. Any other missing or unexpected
    key raises PretrainedWeightsError naming the keys.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    for key in list(state):
        if key.startswith(_HEAD_PREFIXES) and key in own and state[key].shape != own[key].shape:
            del state[key]
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = _resample_pos_embed(model, state["pos_embed"], own["pos_embed"])
    missing = [k for k in own if k not in state and not k.startswith(_HEAD_PREFIXES)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"model.pretrained: {path} does not fit {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:8]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:8]}")
        if wrong:
            parts.append(f"shape mismatches: {wrong[:8]}")
        raise PretrainedWeightsError("; ".join(parts))
    model.load_state_dict(state, strict=False)


def _resample_pos_embed(model: nn.Module, posemb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    old_grid = int(math.isqrt(posemb.shape[1] - prefix))
    new_grid = int(math.isqrt(target.shape[1] - prefix))
    return resample_abs_pos_embed(
        posemb, new_size=[new_grid, new_grid], old_size=[old_grid, old_grid], num_prefix_tokens=prefix
    )
