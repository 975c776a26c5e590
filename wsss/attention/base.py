"""Base class of the attention-map methods (GETAM and baselines): one shared pipeline.

``method(model, images, labels)`` → ``B×C×H×W`` float maps. The base class does the shared
work: pick the blocks, capture their attention (and tokens), one batched backward over the tag
slots when the method needs gradients, token → patch grid, bilinear upsampling
(``align_corners=True``) and zeros for untagged classes. A subclass implements one method,
:meth:`AttentionMapMethod.patch_scores`, from :class:`MapInputs` to per-patch scores.

Eval-mode semantics: ``__call__`` puts the model in eval mode for the forward (restoring every
module's ``training`` flag afterwards) so dropout/drop-path are off and normalisation uses
running statistics: an image's map never depends on the other images of its batch. (timm's
hybrids use GroupNorm, but a BatchNorm stem in train mode would mix the batch's statistics into
every image's attention.) Training code that must differentiate its own train-mode forward
uses :meth:`AttentionMapMethod.maps_from_capture` instead; there the batched backward still
equals the per-image loop, because no op after the patch embedding mixes images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.attention.batched_grad import slot_gradients
from wsss.attention.slots import tag_slots
from wsss.models.attention_capture import AttentionCapture, vit_blocks
from wsss.models.vit_geometry import TokenLayout, token_layout

if TYPE_CHECKING:
    from wsss.models.cls_row_capture import ClsRowCapture

__all__ = ["AttentionMapMethod", "MapInputs", "eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore each module's flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@dataclass
class MapInputs:
    """What a method sees (B images, K tag slots, N tokens, P = h·w patches, D channels).

    attentions: ``B×heads×N×N`` per block of ``method.attention_blocks`` (in order); only the
        cls row, ``B×heads×1×N``, when the method's capture is a ``ClsRowCapture``.
    attention_grads: ``K×B×heads×N×N`` per block, ∂(logit of each image's k-th tag)/∂A
        (``K×B×heads×1×N`` with a ``ClsRowCapture``); ``None`` unless
        ``method.needs_attention_grads``.
    tokens: ``B×N×D`` outputs of ``method.token_blocks`` (Grad-CAM), else empty.
    token_grads: ``K×B×N×D`` per token block, or ``None``.
    layout: prefix-token count and patch grid.
    num_slots: K.
    """

    attentions: list[Tensor]
    attention_grads: list[Tensor] | None
    tokens: list[Tensor]
    token_grads: list[Tensor] | None
    layout: TokenLayout
    num_slots: int


class AttentionMapMethod(ABC):
    """Per-class localisation maps from a timm ViT classifier and image tags.

    Subclasses set the class attributes below and implement :meth:`patch_scores`; they may
    override :meth:`attention_blocks` / :meth:`token_blocks` (which blocks to capture).
    """

    name: str = "base"
    needs_attention_grads: bool = False
    needs_token_grads: bool = False
    needs_cls_token: bool = True  # reads the cls-token row of the attention

    def attention_blocks(self, depth: int) -> Sequence[int]:
        """Blocks whose attention is captured (default: all)."""
        return range(depth)

    def token_blocks(self, model: nn.Module, depth: int) -> Sequence[int]:
        """Blocks whose output tokens are captured (default: none)."""
        return ()

    @abstractmethod
    def patch_scores(self, inputs: MapInputs) -> Tensor:
        """Scores of the patch tokens: ``K×B×P`` (per tag slot) or ``1×B×P`` (class-agnostic),
        float, finite. Called under ``torch.no_grad``."""

    # --- shared pipeline -----------------------------------------------------------------------
    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        """Maps of the tagged classes.

        Args:
            model: timm ViT classifier (``B×3×H×W`` → ``B×C`` logits).
            images: ``B×3×H×W`` float, normalised as the model expects.
            labels: ``B×C`` multi-hot tags (any dtype; > 0 means present).

        Returns:
            ``B×C×H×W`` float; zero for untagged classes; not normalised.
        """
        return self.maps_and_probs(model, images, labels)[0]

    def maps_and_probs(self, model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The maps of :meth:`__call__` and the classifier's ``B×C`` sigmoid probabilities of the
        same forward (detached), e.g. for the labels' confidence."""
        if images.dim() != 4:
            raise ValueError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
        if labels.dim() != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be B×C with B={images.shape[0]}, "
                             f"got shape {tuple(labels.shape)}")
        if torch.is_inference_mode_enabled():
            raise RuntimeError(f"{self.name} needs autograd: call it outside torch.inference_mode")
        grad = self.needs_attention_grads or self.needs_token_grads
        with eval_mode(model), (torch.enable_grad() if grad else torch.no_grad()), \
                self.capture(model) as cap:
            logits = model(images)
            maps = self.maps_from_capture(model, logits, cap, labels, images.shape[-2:])
        return maps, torch.sigmoid(logits.detach().float())

    def capture(self, model: nn.Module) -> AttentionCapture | ClsRowCapture:
        """The capture this method needs (enter it around the forward): an
        :class:`AttentionCapture` of its blocks, or a :class:`ClsRowCapture` for a method that
        reads only cls rows."""
        depth = len(vit_blocks(model))
        if self.needs_cls_token and getattr(model, "cls_token", None) is None:
            raise ValueError(f"{self.name} reads the cls-token attention row, but "
                             f"{type(model).__name__} has no class token")
        return AttentionCapture(model, blocks=self.attention_blocks(depth),
                                outputs=self.token_blocks(model, depth), requires_grad=True)

    def maps_from_capture(
        self,
        model: nn.Module,
        logits: Tensor,
        capture: AttentionCapture | ClsRowCapture,
        labels: Tensor,
        image_size: Sequence[int],
        retain_graph: bool = False,
    ) -> Tensor:
        """Maps from a forward already run inside ``self.capture(model)``.

        ``logits`` ``B×C`` (pre-sigmoid); ``retain_graph=True`` keeps the graph for a later
        backward (single-stage training). Returns ``B×C×H×W`` float, detached.
        """
        if labels.shape != logits.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != logits shape "
                             f"{tuple(logits.shape)}")
        H, W = int(image_size[0]), int(image_size[1])
        layout = token_layout(model, (H, W))
        slots = tag_slots(labels)
        attentions, tokens = capture.attentions, capture.outputs
        for a in attentions:
            if a.shape[-1] != layout.num_tokens:
                raise RuntimeError(f"captured {a.shape[-1]} tokens, layout expects "
                                   f"{layout.num_prefix_tokens}+{layout.grid} = {layout.num_tokens}")
        att_targets = capture.grad_targets if self.needs_attention_grads else []
        targets = att_targets + (tokens if self.needs_token_grads else [])
        grads = slot_gradients(logits, slots, targets, retain_graph) if targets else []
        n_att = len(att_targets)
        inputs = MapInputs(
            attentions=[a.detach() for a in attentions],
            attention_grads=capture.attention_grads(grads[:n_att]) if self.needs_attention_grads else None,
            tokens=[t.detach() for t in tokens],
            token_grads=grads[n_att:] if self.needs_token_grads else None,
            layout=layout,
            num_slots=slots.shape[1],
        )
        with torch.no_grad():
            scores = self.patch_scores(inputs)
            return _scatter_upsampled(scores, slots, layout, labels.shape[1], (H, W))


def _scatter_upsampled(
    scores: Tensor, slots: Tensor, layout: TokenLayout, num_classes: int, size: tuple[int, int]
) -> Tensor:
    """``K×B×P`` (or ``1×B×P``) slot scores → ``B×C×H×W``: each valid (image, slot) map is put
    on the patch grid, upsampled bilinearly (align_corners=True) and written to its class."""
    B = slots.shape[0]
    out = scores.new_zeros(B, num_classes, *size)
    b_idx, k_idx = torch.nonzero(slots >= 0, as_tuple=True)
    if b_idx.numel() == 0:
        return out
    picked = scores[k_idx if scores.shape[0] > 1 else torch.zeros_like(k_idx), b_idx]  # M×P
    grid = layout.to_grid(picked).unsqueeze(1)  # M×1×h×w
    up = F.interpolate(grid, size=size, mode="bilinear", align_corners=True)[:, 0]
    out[b_idx, slots[b_idx, k_idx]] = up
    return out
