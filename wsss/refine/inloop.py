"""Pseudo-labels inside a training step, from the step's own forward (DESIGN step 8).

The FIRST backward of single-stage training: the batched GETAM gradients of every image's
tagged logits w.r.t. the captured attention (``torch.autograd.grad``: no parameter gradient is
touched; the graph is retained for the SECOND backward of the losses), then, without gradient,
the offline flow's :class:`wsss.refine.chain.LabelChain` (without its CRF, and without the SAM
stage of ``refine.sam`` even when that is enabled: SAM's image encoder at every step would
cost far more than the step itself):

    GETAM maps → normalise → PAMR on the tag slots → normalise → saliency + label rule

so for fixed weights the labels equal the flow's labels for the same crops. Usage::

    labeler = InLoopLabeler(backbone, cam.start_block, refine)
    with labeler.capture():
        out = segmenter(images)
        labels, saliency = labeler(out.logits, tags, images, rgb)  # B×H×W int64, B masks
    loss(out.seg, labels).backward()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

from torch import Tensor, nn

from wsss.attention.getam import GETAM
from wsss.config import RefineConfig, start_block_problem
from wsss.models.attention_capture import AttentionCapture, vit_blocks
from wsss.models.vit_geometry import token_layout
from wsss.refine.chain import LabelChain
from wsss.refine.saliency import TokenCutSaliency
from wsss.refine.tokencut import KeyCapture

__all__ = ["InLoopLabeler"]


class InLoopLabeler:
    """GETAM → the labelling chain on the forward of a training step.

    backbone: the segmenter's timm ViT (the module the forward runs through); start_block:
    ``cam.start_block``; refine: the ``refine`` section (PAMR, label rule, saliency; the CRF is
    not run in the loop). Saliency: ``tokencut`` from the keys recorded during the same forward;
    ``folder`` from the binarised crop masks the caller passes; ``none``: background from α alone.
    """

    def __init__(self, backbone: nn.Module, start_block: int | None, refine: RefineConfig) -> None:
        self.backbone = backbone
        problem = start_block_problem(start_block, len(vit_blocks(backbone)), "the segmenter's backbone")
        if problem:  # before the first training step, not at its first labelling
            raise ValueError(problem)
        self.method = GETAM(start_block)
        self.chain = LabelChain(refine.pamr, refine.label)
        self.saliency = refine.saliency
        self.tokencut = None
        if self.saliency.source == "tokencut" and self.saliency.backbone is not None:
            raise ValueError("refine.saliency.backbone is not used by the single-stage loop (its TokenCut reads the keys "
                             "of the training forward): make the saliency maps first (`wsss saliency` with the backbone) "
                             "and use refine.saliency.source=folder with data.saliency_dir, or unset the backbone")
        if self.saliency.source == "tokencut":
            self.tokencut = TokenCutSaliency(backbone, tau=self.saliency.tokencut_tau, eps=self.saliency.tokencut_eps,
                                             objects=self.saliency.tokencut_objects)
        self._capture: AttentionCapture | None = None
        self._keys: KeyCapture | None = None

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the attention of blocks ≥ start (and the last block's keys for tokencut)
        during the forward run inside; the records are dropped on exit."""
        with ExitStack() as stack:
            self._capture = stack.enter_context(self.method.capture(self.backbone))
            if self.tokencut is not None:
                self._keys = stack.enter_context(KeyCapture(self.backbone))
            try:
                yield
            finally:
                self._capture = self._keys = None

    def __call__(self, logits: Tensor, tags: Tensor, images: Tensor, rgb: Tensor,
                 saliency: Sequence[Tensor | None] | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """Labels for the forward just run inside :meth:`capture`.

        Args:
            logits: ``B×C`` class logits of that forward (attached to its graph).
            tags: ``B×C`` multi-hot.
            images: ``B×3×h×w`` the model input of that forward (only its size is read).
            rgb: ``B×3×H×W`` the images (uint8 or float, any range: PAMR is scale-free), at the
                size the labels are wanted; the maps are upsampled to it when the model input
                was smaller (bilinear, align_corners=True, as the flow does).
            saliency: source ``folder``: B entries, ``H×W`` bool masks (``binarise_saliency``) or
                None for an image without a map.

        Returns:
            ``B×H×W`` int64 labels (0 background, c + 1 class c, 255 ignore; no gradient) and the
            B saliency masks the rule used (``H×W`` bool, or None for an image without).
        """
        if self._capture is None:
            raise RuntimeError("call the labeler inside `with labeler.capture():` around the forward")
        tags = tags.to(logits.device)
        maps = self.method.maps_from_capture(self.backbone, logits, self._capture, tags, images.shape[-2:],
                                             retain_graph=True)
        masks = self._saliency(tuple(rgb.shape[-2:]), images, saliency, logits.shape[0])
        result = self.chain(maps, tags, rgb, masks)
        return result.labels, result.saliency

    def _saliency(self, size, images: Tensor, saliency, batch: int) -> list[Tensor | None]:
        """B entries: H×W bool (True = salient) or None."""
        if self.saliency.source == "none":
            return [None] * batch
        if self.tokencut is not None:
            keys = self._keys.keys.detach().float()
            return self.tokencut.from_keys(keys, token_layout(self.backbone, images.shape[-2:]), [size] * batch)
        if saliency is None:
            raise ValueError("refine.saliency.source=folder: pass the batch's saliency masks")
        missing = [i for i, mask in enumerate(saliency) if mask is None]
        if missing and self.saliency.missing == "error":
            raise ValueError(f"refine.saliency.source=folder but images {missing} of the batch have no saliency "
                             "map (set refine.saliency.missing=none to label them without)")
        return [None if mask is None else mask.to(images.device) for mask in saliency]
