"""The cls-token row of the attention and its gradient, with timm's fused attention kept on.

A method that reads only the cls row of A_b and of ∂y/∂A_b (GETAM) does not need the N×N
matrices. With O = A·V per head (the attention's output, before the heads are concatenated),

    A[cls, :]     = softmax(q_cls · Kᵀ · scale)            (recomputed from the block's q, k)
    ∂y/∂A[cls, j] = Σ_d ∂y/∂O[cls, d] · V[j, d]            (chain rule through O = A·V)

so it suffices to record q, k, v and to differentiate the logits w.r.t. O, a ``B×N×heads·hd``
tensor, instead of w.r.t. ``B×heads×N×N`` attention matrices. The blocks keep
``scaled_dot_product_attention`` in the forward and its backward: the same maps as
:class:`~wsss.models.attention_capture.AttentionCapture` (a test checks GETAM against the
paper's loop on it), about 1.7× faster on the demo model.

Hook points on timm's ``Attention`` (no code copied): ``q_norm``/``k_norm`` outputs (q and k as
the attention uses them), ``qkv`` output (v), and the input of ``norm``, which is O with the heads
concatenated (``norm`` is the identity unless the model uses scale-norm; a gate, when present,
multiplies after it). Valid while attention dropout is inactive (eval mode or p = 0):
:meth:`ClsRowCapture.supports` says when it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
from torch import Tensor, nn

from wsss.models.attention_capture import HookedCapture, _normalise_indices, vit_blocks

__all__ = ["ClsRowCapture"]

_PARTS = ("qkv", "q_norm", "k_norm", "norm")


class ClsRowCapture(HookedCapture):
    """Context manager recording what the cls row of the attention of ``blocks`` needs.

    ``with ClsRowCapture(model, blocks) as cap: logits = model(x)``, then differentiate the
    logits w.r.t. ``cap.grad_targets`` (``B×N×heads·hd`` per block, in the graph) and turn those
    gradients into ∂y/∂A[cls, :] with :meth:`attention_grads`. ``cap.attentions`` is the cls row
    of A as ``B×heads×1×N`` per block (rows sum to 1), detached.
    """

    def __init__(self, model: nn.Module, blocks: Iterable[int] | None = None) -> None:
        super().__init__(model)
        self._blocks = vit_blocks(model)
        self.blocks = _normalise_indices(blocks, len(self._blocks), "attention block")
        self._q: dict[int, Tensor] = {}
        self._k: dict[int, Tensor] = {}
        self._v: dict[int, Tensor] = {}
        self._o: dict[int, Tensor] = {}

    @staticmethod
    def supports(model: nn.Module, blocks: Iterable[int] | None = None) -> bool:
        """True when every block in ``blocks`` has timm's ``Attention`` parts used here and its
        attention dropout is inactive (eval mode, or p = 0)."""
        all_blocks = vit_blocks(model)
        for b in _normalise_indices(blocks, len(all_blocks), "attention block"):
            attn = all_blocks[b].attn
            if not all(isinstance(getattr(attn, part, None), nn.Module) for part in _PARTS):
                return False
            if not hasattr(attn, "num_heads") or not hasattr(attn, "scale"):
                return False
            if attn.training and getattr(attn.attn_drop, "p", 0.0) > 0:
                return False
        return True

    # --- records -----------------------------------------------------------------------------
    def _recorded(self, store: dict[int, Tensor]) -> list[Tensor]:
        missing = [b for b in self.blocks if b not in store]
        if missing:
            raise RuntimeError(f"nothing recorded for blocks {missing}: run a forward inside the context first")
        return [store[b] for b in self.blocks]

    @property
    def grad_targets(self) -> list[Tensor]:
        """O per block, ``B×N×heads·hd``, attached to the graph."""
        return self._recorded(self._o)

    @property
    def outputs(self) -> list[Tensor]:
        """No block outputs are recorded (the interface of ``AttentionCapture``)."""
        return []

    @property
    def attentions(self) -> list[Tensor]:
        """The cls row of A per block, ``B×heads×1×N`` float, detached."""
        out = []
        for b, q, k in zip(self.blocks, self._recorded(self._q), self._recorded(self._k)):
            scale = self._blocks[b].attn.scale
            out.append(((q[:, :, :1] * scale) @ k.transpose(-2, -1)).softmax(-1))
        return out

    def attention_grads(self, grads: list[Tensor]) -> list[Tensor]:
        """``K×B×N×heads·hd`` gradients w.r.t. :attr:`grad_targets` → ∂y/∂A[cls, :] per block,
        ``K×B×heads×1×N``."""
        out = []
        for g, v in zip(grads, self._recorded(self._v)):
            K, B = g.shape[:2]
            heads, hd = v.shape[1], v.shape[3]
            d_cls = g[:, :, 0].reshape(K, B, heads, hd)
            out.append(torch.einsum("kbhd,bhnd->kbhn", d_cls, v).unsqueeze(3))
        return out

    def clear(self) -> None:
        for store in (self._q, self._k, self._v, self._o):
            store.clear()

    # --- hooks -------------------------------------------------------------------------------
    def _on_q(self, b: int, module, args, output: Tensor) -> None:
        self._q[b] = output.detach()

    def _on_k(self, b: int, module, args, output: Tensor) -> None:
        self._k[b] = output.detach()

    def _on_qkv(self, b: int, module, args, output: Tensor) -> None:
        attn = self._blocks[b].attn
        B, N, _ = output.shape
        heads = attn.num_heads
        self._v[b] = output.detach().reshape(B, N, 3, heads, -1)[:, :, 2].transpose(1, 2)  # B×heads×N×hd

    def _on_heads_output(self, b: int, module, args):
        o = args[0]
        if torch.is_grad_enabled() and not o.requires_grad:
            o.requires_grad_(True)  # frozen model: make O a graph leaf the logits depend on
        self._o[b] = o

    def _attach(self) -> None:
        for b in self.blocks:
            attn = self._blocks[b].attn
            self._handles += [
                attn.q_norm.register_forward_hook(partial(self._on_q, b)),
                attn.k_norm.register_forward_hook(partial(self._on_k, b)),
                attn.qkv.register_forward_hook(partial(self._on_qkv, b)),
                attn.norm.register_forward_pre_hook(partial(self._on_heads_output, b)),
            ]
