"""The geometry of a timm ViT's input and tokens, used wherever images meet the model (maps,
saliency, pseudo-labels, predictions, scoring):

    stride = model_stride(model)                        # input pixels per token side (16 for */16)
    images = model_inputs(samples, stride)              # B×3×h×w, each side a multiple of stride
    layout = token_layout(model, images.shape[-2:])     # prefix tokens + h/stride × w/stride grid
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wsss.data.tensors import image_to_tensor, resize_image

__all__ = ["TokenLayout", "token_layout", "model_stride", "model_input_size", "model_inputs"]


@dataclass(frozen=True)
class TokenLayout:
    """Token sequence of a ViT for one input size: ``num_prefix_tokens`` (cls, dist, registers)
    followed by ``grid[0]×grid[1]`` patch tokens in row-major order."""

    num_prefix_tokens: int
    grid: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    def to_grid(self, patch_values: Tensor) -> Tensor:
        """``...×P`` (P = h·w patch values, prefix already removed) → ``...×h×w``."""
        if patch_values.shape[-1] != self.num_patches:
            raise ValueError(
                f"expected {self.num_patches} patch values for grid {self.grid}, "
                f"got {patch_values.shape[-1]}"
            )
        return patch_values.reshape(*patch_values.shape[:-1], *self.grid)


def token_layout(model: nn.Module, image_size: tuple[int, int] | Sequence[int]) -> TokenLayout:
    """Prefix-token count and patch grid ``h×w`` of ``model`` for an ``H×W`` input.

    Uses timm's ``patch_embed.dynamic_feat_size`` (PatchEmbed and HybridEmbed: it accounts for
    the CNN stem's reduction and dynamic padding); falls back to the stride arithmetic for
    embeddings that lack it.
    """
    H, W = int(image_size[0]), int(image_size[1])
    embed = model.patch_embed
    if hasattr(embed, "dynamic_feat_size"):
        h, w = embed.dynamic_feat_size((H, W))
    else:  # older timm: total stride = feat_ratio (hybrid) or patch size
        ratio = embed.feat_ratio(as_scalar=False) if hasattr(embed, "feat_ratio") else embed.patch_size
        h, w = H // ratio[0], W // ratio[1]
    return TokenLayout(num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 1)), grid=(h, w))


def model_stride(model: nn.Module) -> int:
    """Input pixels per patch token along each side of a timm ViT (16 for */16; the CNN stem's
    total stride for hybrids, e.g. 32 for r_s16_p8)."""
    probe = 224
    return probe // token_layout(model, (probe, probe)).grid[0]


def model_input_size(shape: tuple[int, int] | Sequence[int], stride: int) -> tuple[int, int]:
    """Model input size for an H×W image: each side rounded to the nearest multiple of the
    stride (at least one stride)."""
    h, w = int(shape[0]), int(shape[1])
    return max(stride, round(h / stride) * stride), max(stride, round(w / stride) * stride)


def model_inputs(samples, stride: int) -> Tensor:
    """The model input of ``samples`` (``wsss.data.Sample`` objects whose images share one
    ``model_input_size`` h×w for ``stride``, e.g. 224×150 and 224×152 at stride 16): B×3×h×w
    float on the CPU, each image resized to it (``resize_image``) and ImageNet-normalised
    (``image_to_tensor``). ValueError for a batch of several model input sizes."""
    sizes = {model_input_size(s.image.shape[:2], stride) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"a batch must hold images of one model input size at stride {stride}, got {sorted(sizes)}")
    size = sizes.pop()
    return torch.stack([image_to_tensor(resize_image(s.image, size)) for s in samples])
