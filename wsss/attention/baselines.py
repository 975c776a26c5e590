"""Baseline attention maps on the GETAM interface (for side-by-side reports).

- ``attention``: last block's cls-row attention, mean over heads.
- ``rollout``: attention rollout (Abnar & Zuidema 2020): Ã_b = rownorm(mean_h A_b + I),
  R = Ã_L ⋯ Ã_1, cls row.
- ``relevance``: gradient-weighted relevance (Chefer et al. 2021): R = I, for each block
  R ← R + mean_h(ReLU(∇A_b ⊙ A_b))·R, cls row.
- ``gradcam``: Grad-CAM on patch tokens: weights = mean over patches of ∂y_c/∂tokens,
  map = ReLU(Σ_d w_d · tokens_d).

Only the cls row of the products is needed, so rollout/relevance propagate a row vector
(r ← r·(…), last block first) instead of multiplying N×N matrices: same values, O(N²) per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from wsss.attention.base import AttentionMapMethod, MapInputs
from wsss.attention.getam import GETAM

__all__ = ["LastBlockAttention", "AttentionRollout", "GradientRelevance", "PatchGradCAM",
           "make_map_method", "MAP_METHODS"]


def _cls_basis(a: Tensor, lead: tuple[int, ...]) -> Tensor:
    """``lead×N`` one-hot row vectors at token 0, dtype/device of ``a`` (…×N×N)."""
    r = a.new_zeros(*lead, a.shape[-1])
    r[..., 0] = 1
    return r


class LastBlockAttention(AttentionMapMethod):
    """Cls-row attention of the last block, mean over heads (class-agnostic)."""

    name = "attention"

    def attention_blocks(self, depth: int) -> range:
        return range(depth - 1, depth)

    def patch_scores(self, inputs: MapInputs) -> Tensor:
        a = inputs.attentions[-1]  # B×heads×N×N
        return a[:, :, 0, inputs.layout.num_prefix_tokens:].mean(1).unsqueeze(0)  # 1×B×P


class AttentionRollout(AttentionMapMethod):
    """Attention rollout over all blocks (class-agnostic)."""

    name = "rollout"

    def patch_scores(self, inputs: MapInputs) -> Tensor:
        atts = inputs.attentions
        r = _cls_basis(atts[0], (atts[0].shape[0],))  # B×N
        for a in reversed(atts):
            m = a.mean(1)  # B×N×N
            m = m + torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
            m = m / m.sum(-1, keepdim=True)
            r = torch.einsum("bn,bnm->bm", r, m)
        return r[:, inputs.layout.num_prefix_tokens:].unsqueeze(0)  # 1×B×P


class GradientRelevance(AttentionMapMethod):
    """Chefer et al. 2021 relevance: R ← R + mean_h(ReLU(∇A ⊙ A))·R over all blocks."""

    name = "relevance"
    needs_attention_grads = True

    def patch_scores(self, inputs: MapInputs) -> Tensor:
        grads = inputs.attention_grads
        K, B = grads[0].shape[:2]
        r = _cls_basis(grads[0], (K, B))  # K×B×N
        for a, g in zip(reversed(inputs.attentions), reversed(grads)):
            cam = (g * a).relu_().mean(2)  # K×B×N×N
            r = r + torch.einsum("kbn,kbnm->kbm", r, cam)
        return r[..., inputs.layout.num_prefix_tokens:]  # K×B×P


class PatchGradCAM(AttentionMapMethod):
    """Grad-CAM on the patch tokens of a block.

    ``block=None`` picks the last block's output when the head pools patch tokens
    (``global_pool`` avg/max…); with a cls-token head (``global_pool='token'``) the last block's
    patch outputs never reach the logits (zero gradient), so it uses the tokens entering the
    last block (output of block L−2), as pytorch-grad-cam does for ViTs.
    """

    name = "gradcam"
    needs_token_grads = True
    needs_cls_token = False

    def __init__(self, block: int | None = None) -> None:
        self.block = block

    def attention_blocks(self, depth: int) -> Sequence[int]:
        return ()

    def token_blocks(self, model: nn.Module, depth: int) -> Sequence[int]:
        if self.block is not None:
            return (self.block,)
        token_head = getattr(model, "global_pool", "token") == "token"
        if token_head and depth < 2:
            raise ValueError("gradcam with a cls-token head needs at least 2 blocks")
        return (depth - 2,) if token_head else (depth - 1,)

    def patch_scores(self, inputs: MapInputs) -> Tensor:
        p = inputs.layout.num_prefix_tokens
        t = inputs.tokens[0][:, p:]  # B×P×D
        g = inputs.token_grads[0][:, :, p:]  # K×B×P×D
        w = g.mean(2)  # K×B×D
        return torch.einsum("kbd,bpd->kbp", w, t).relu_()


MAP_METHODS: dict[str, type[AttentionMapMethod]] = {
    "getam": GETAM,
    "attention": LastBlockAttention,
    "rollout": AttentionRollout,
    "relevance": GradientRelevance,
    "gradcam": PatchGradCAM,
}


def make_map_method(name: str, **kwargs) -> AttentionMapMethod:
    """Build a map method by name (getam|attention|rollout|relevance|gradcam).

    ``kwargs`` go to the constructor (``start_block`` for getam, ``block`` for gradcam).
    Raises ValueError naming the bad name and the valid ones.
    """
    try:
        cls = MAP_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown map method {name!r}; valid: {', '.join(MAP_METHODS)}") from None
    return cls(**kwargs)
