"""GETAM: gradient-weighted element-wise transformer attention maps (Sun et al., 2112.02841).

For class c and every block b ≥ start (default L//2, the paper's blocks 6..11 of 12):

    G_b = mean_heads ReLU(∇A_b ⊙ A_b) ⊙ mean_heads ReLU(∇A_b),   ∇A_b = ∂y_c/∂A_b
    M_c = ReLU(Σ_b G_b)[cls row, patch columns] → h×w → bilinear (align_corners=True) → H×W

with A_b the post-softmax attention (heads×N×N) and y_c the pre-sigmoid logit. All (image,
tagged class) pairs of a batch come from one batched backward (see ``batched_grad``); only
the cls row of A_b and ∇A_b is read, so the capture is a ``ClsRowCapture``: every block keeps
timm's fused attention, the backward differentiates the attention outputs and stops at block
``start``, and the cls rows are rebuilt from q, k, v.
"""

from __future__ import annotations

from torch import Tensor, nn

from wsss.attention.base import AttentionMapMethod, MapInputs
from wsss.models.attention_capture import vit_blocks
from wsss.models.cls_row_capture import ClsRowCapture

__all__ = ["GETAM", "getam"]


class GETAM(AttentionMapMethod):
    """GETAM maps. ``start_block``: first block summed (negative counts from the end);
    ``None`` = depth // 2."""

    name = "getam"
    needs_attention_grads = True

    def __init__(self, start_block: int | None = None) -> None:
        self.start_block = start_block

    def attention_blocks(self, depth: int) -> range:
        start = depth // 2 if self.start_block is None else int(self.start_block)
        if start < 0:
            start += depth
        if not 0 <= start < depth:
            raise ValueError(f"start_block {self.start_block} out of range for a model with "
                             f"{depth} blocks (valid: {-depth}..{depth - 1} or None)")
        return range(start, depth)

    def capture(self, model: nn.Module):
        """GETAM reads only cls rows: a :class:`ClsRowCapture` (fused attention kept) where the
        model allows it, else the base class's full :class:`AttentionCapture`."""
        blocks = self.attention_blocks(len(vit_blocks(model)))
        if getattr(model, "cls_token", None) is not None and ClsRowCapture.supports(model, blocks):
            return ClsRowCapture(model, blocks)
        return super().capture(model)

    def patch_scores(self, inputs: MapInputs) -> Tensor:
        """``K×B×P`` = ReLU(Σ_b G_b) on the cls row, patch columns."""
        p = inputs.layout.num_prefix_tokens
        total = None
        for a, g in zip(inputs.attentions, inputs.attention_grads):
            a_row = a[:, :, 0, p:]  # B×heads×P
            g_row = g[:, :, :, 0, p:]  # K×B×heads×P
            gb = (g_row * a_row).relu_().mean(2) * g_row.relu().mean(2)  # K×B×P
            total = gb if total is None else total + gb
        return total.relu_()


def getam(model: nn.Module, images: Tensor, labels: Tensor, start_block: int | None = None) -> Tensor:
    """GETAM maps of the tagged classes.

    Args:
        model: timm ViT classifier (vit_*, deit_* incl. distilled, hybrid), any input size.
        images: ``B×3×H×W`` float, normalised for the model.
        labels: ``B×C`` multi-hot tags.
        start_block: first block summed; ``None`` = depth // 2.

    Returns:
        ``B×C×H×W`` float, ≥ 0, zero for untagged classes, not normalised. Parameters'
        ``.grad`` are untouched; the model runs with eval-mode semantics (see ``base``).
    """
    return GETAM(start_block)(model, images, labels)
