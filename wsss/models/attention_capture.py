"""Record the post-softmax attention of timm ViT blocks while a map is computed.

Works for timm's ``VisionTransformer`` family: vit_* (incl. DINO weights), deit_* (distilled:
2 prefix tokens), hybrid vit_*_r50_* / vit_*_r26_* / vit_*_r_s16_* (a CNN stem in front of the
tokens), any patch size and input size (``dynamic_img_size=True``).

How it attaches, without copying timm's code: every ``block.attn`` is a timm ``Attention`` with a
``fused_attn`` flag and an ``attn_drop`` dropout. With ``fused_attn`` off, timm computes
``softmax(q kᵀ·scale)`` explicitly and passes it through ``attn_drop`` right before ``@ v``; a
forward hook on ``attn_drop`` therefore sees exactly the matrix the block multiplies with V
(post-softmax; equal to it after dropout too, since dropout is the identity in eval mode or
when ``attn_drop`` is 0, timm's default). Fused attention (``scaled_dot_product_attention``)
returns no weights, so the flag is switched off only inside the context, only for the blocks in
use, and restored on exit. Blocks not in use keep their fused kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

__all__ = ["AttentionCapture", "HookedCapture", "vit_blocks"]


def vit_blocks(model: nn.Module) -> Sequence[nn.Module]:
    """The transformer blocks of a timm ViT (``model.blocks``), checked for a capturable ``attn``.

    Raises:
        TypeError: the model has no ``blocks`` or a block's ``attn`` lacks ``attn_drop`` (not a
            timm ``Attention``). ``fused_attn`` is optional (timm < 0.9 never fuses).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise TypeError(
            f"{type(model).__name__} has no `blocks`: attention capture supports timm "
            "VisionTransformer models (vit_*, deit_*, hybrid vit_*_r50_*/r26_*)"
        )
    for i, blk in enumerate(blocks):
        attn = getattr(blk, "attn", None)
        if attn is None or not isinstance(getattr(attn, "attn_drop", None), nn.Module):
            raise TypeError(
                f"block {i} of {type(model).__name__}: `attn` ({type(attn).__name__}) has no "
                "`attn_drop`; only timm's standard Attention can be captured"
            )
    return blocks


def _normalise_indices(indices: Iterable[int] | None, depth: int, what: str) -> list[int]:
    if indices is None:
        return list(range(depth))
    out = []
    for i in indices:
        j = int(i) + depth if int(i) < 0 else int(i)
        if not 0 <= j < depth:
            raise ValueError(f"{what} index {i} out of range for a model with {depth} blocks "
                             f"(valid: {-depth}..{depth - 1})")
        out.append(j)
    return sorted(set(out))


def _recorded(records: dict[int, Tensor], blocks: list[int], what: str) -> list[Tensor]:
    """``records`` of ``blocks`` in order; RuntimeError naming the blocks with no ``what`` recorded."""
    missing = [b for b in blocks if b not in records]
    if missing:
        raise RuntimeError(f"no {what} recorded for blocks {missing}: run a forward inside the context first")
    return [records[b] for b in blocks]


class HookedCapture:
    """The life cycle shared by the capture context managers: ``_attach`` registers the hooks
    on enter (and timm's gradient checkpointing is switched off, since blocks re-run in the
    backward would not be the recorded ones); on exit every hook is removed, ``_restore`` puts
    back what ``_attach`` changed, checkpointing is restored and the records are dropped."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._checkpointing: bool | None = None

    def _attach(self) -> None:
        """Register the hooks (append them to ``self._handles``)."""
        raise NotImplementedError

    def _restore(self) -> None:
        """Undo what ``_attach`` changed besides the hooks (default: nothing)."""

    def clear(self) -> None:
        """Drop the recorded tensors (hooks stay)."""
        raise NotImplementedError

    def __enter__(self):
        if self._handles:
            raise RuntimeError(f"{type(self).__name__} is not re-entrant")
        try:
            self._attach()
            if getattr(self.model, "grad_checkpointing", False):
                self._checkpointing = True
                self.model.grad_checkpointing = False
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._restore()
        if self._checkpointing is not None:
            self.model.grad_checkpointing = self._checkpointing
            self._checkpointing = None
        self.clear()


class AttentionCapture(HookedCapture):
    """Context manager recording attention (and optionally block outputs) of a timm ViT.

    ``with AttentionCapture(model, blocks=[6, 7]) as cap: logits = model(x)`` then
    ``cap.attentions`` is a list (in block order) of ``B×heads×N×N`` float tensors, rows summing
    to 1, still attached to the autograd graph (differentiate the logits w.r.t. them).
    ``cap.outputs`` likewise holds ``B×N×D`` block outputs for the indices in ``outputs``.

    Hooks are registered once on ``__enter__`` and removed on ``__exit__``; each forward
    overwrites the previous record (nothing accumulates across calls); on exit the fused flags
    and ``grad_checkpointing`` are restored and all recorded tensors are dropped.

    Args:
        model: timm VisionTransformer (or subclass).
        blocks: indices of blocks whose attention to record (negative allowed); ``None`` = all.
        outputs: indices of blocks whose output tokens to record; default none.
        requires_grad: make recorded tensors require grad when grad mode is on even if the
            model's parameters are frozen, so that logits can be differentiated w.r.t. them.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Iterable[int] | None = None,
        outputs: Iterable[int] = (),
        requires_grad: bool = False,
    ) -> None:
        super().__init__(model)
        self._blocks = vit_blocks(model)
        depth = len(self._blocks)
        self.blocks = _normalise_indices(blocks, depth, "attention block")
        self.output_blocks = _normalise_indices(outputs, depth, "output block")
        self.requires_grad = requires_grad
        self._attn: dict[int, Tensor] = {}
        self._out: dict[int, Tensor] = {}
        self._fused: dict[int, bool] = {}

    # --- records -----------------------------------------------------------------------------
    @property
    def attentions(self) -> list[Tensor]:
        """``B×heads×N×N`` per captured block (order of ``self.blocks``) from the last forward."""
        return _recorded(self._attn, self.blocks, "attention")

    @property
    def outputs(self) -> list[Tensor]:
        """``B×N×D`` output tokens per block of ``self.output_blocks`` from the last forward."""
        return _recorded(self._out, self.output_blocks, "output")

    @property
    def grad_targets(self) -> list[Tensor]:
        """What to differentiate the logits w.r.t. for attention gradients: the attentions."""
        return self.attentions

    def attention_grads(self, grads: list[Tensor]) -> list[Tensor]:
        """Gradients w.r.t. :attr:`grad_targets` are already ∂y/∂A: ``K×B×heads×N×N`` each."""
        return grads

    def clear(self) -> None:
        """Drop the recorded tensors (hooks stay)."""
        self._attn.clear()
        self._out.clear()

    # --- hooks -------------------------------------------------------------------------------
    def _track(self, t: Tensor) -> Tensor:
        if self.requires_grad and torch.is_grad_enabled() and not t.requires_grad:
            t.requires_grad_(True)  # frozen model: make this tensor a graph leaf
        return t

    def _on_attention(self, index: int, module: nn.Module, args, output: Tensor) -> None:
        self._attn[index] = self._track(output)

    def _on_output(self, index: int, module: nn.Module, args, output: Tensor) -> None:
        self._out[index] = self._track(output)

    def _attach(self) -> None:
        for b in self.blocks:
            attn = self._blocks[b].attn
            if hasattr(attn, "fused_attn"):
                self._fused[b] = attn.fused_attn
                attn.fused_attn = False
            self._handles.append(attn.attn_drop.register_forward_hook(partial(self._on_attention, b)))
        for b in self.output_blocks:
            self._handles.append(self._blocks[b].register_forward_hook(partial(self._on_output, b)))

    def _restore(self) -> None:
        for b, flag in self._fused.items():
            self._blocks[b].attn.fused_attn = flag
        self._fused.clear()
