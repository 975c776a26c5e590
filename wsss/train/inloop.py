"""Pseudo-labels inside a training step, from the step's own forward (DESIGN step 8).

The FIRST backward of single-stage training: the batched GETAM gradients of every image's
tagged logits w.r.t. the captured attention (``torch.autograd.grad``: no parameter gradient is
touched; the graph is retained for the SECOND backward of the losses), then, without gradient,
the same chain as the offline flow (``wsss.refine.chain.PseudoLabeler``):

    GETAM maps → normalise → PAMR on the tagged channels → normalise → saliency + label rule

with the very functions it uses (``normalise_maps``, ``gather_slots``/``scatter_slots``, ``pamr``,
``wsss.refine.label_rule.pseudo_labels``), so for fixed weights the labels equal the flow's
labels for the same crops (without its optional CRF). Usage::

    labeler = InLoopLabeler(config, backbone)
    with labeler.capture():
        out = segmenter(images)
        labels, saliency = labeler(out.logits, tags, images, rgb)  # B×H×W int64, B masks
    loss(out.seg, labels).backward()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from wsss.attention.base import eval_mode
from wsss.attention.batched_grad import tag_slots
from wsss.attention.dataset_maps import model_input_size, normalise_maps
from wsss.attention.getam import GETAM
from wsss.data.base import Dataset, DatasetError
from wsss.data.batching import same_size_batches
from wsss.data.tensors import image_to_tensor, resize_image
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.evaluate import Evaluation
from wsss.models.attention_capture import AttentionCapture, token_layout
from wsss.refine.chain import gather_slots, scatter_slots
from wsss.refine.label_rule import pseudo_labels
from wsss.refine.pamr import pamr
from wsss.refine.saliency import TokenCutSaliency
from wsss.refine.tokencut import KeyCapture

__all__ = ["InLoopLabeler", "evaluate_inloop_labels"]


class InLoopLabeler:
    """GETAM → PAMR → label rule on the forward of a training step.

    config: a ``wsss.config.Config`` (``cam.start_block``, ``refine.pamr``, ``refine.saliency``,
    ``refine.label``); backbone: the segmenter's timm ViT (the module the forward runs through).
    Saliency: ``tokencut`` from the keys recorded during the same forward; ``folder`` from the
    cropped maps the caller passes; ``none``: the rule's background from α alone.
    """

    def __init__(self, config, backbone: nn.Module) -> None:
        self.backbone = backbone
        self.method = GETAM(config.cam.start_block)
        self.pamr, self.rule, self.saliency = config.refine.pamr, config.refine.label, config.refine.saliency
        self.tokencut = None
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

    def __call__(self, logits: Tensor, tags: Tensor, images: Tensor, rgb: Tensor, saliency: Tensor | None = None,
                 has_saliency: Tensor | None = None) -> tuple[Tensor, list[Tensor | None]]:
        """Labels for the forward just run inside :meth:`capture`.

        Args:
            logits: ``B×C`` class logits of that forward (attached to its graph).
            tags: ``B×C`` multi-hot.
            images: ``B×3×h×w`` the model input of that forward (only its size is read).
            rgb: ``B×3×H×W`` the images (uint8 or float, any range: PAMR is scale-free), at the
                size the labels are wanted; the maps are upsampled to it when the model input
                was smaller (bilinear, align_corners=True, as the flow does).
            saliency: ``B×H×W`` float in [0, 1], cropped saliency maps (source ``folder``).
            has_saliency: ``B`` bool, which images have a map (source ``folder``).

        Returns:
            ``B×H×W`` int64 labels (0 background, c + 1 class c, 255 ignore; no gradient) and the
            B saliency masks the rule used (``H×W`` bool, or None for an image without).
        """
        if self._capture is None:
            raise RuntimeError("call the labeler inside `with labeler.capture():` around the forward")
        tags = tags.to(logits.device)
        size = tuple(rgb.shape[-2:])
        layout = token_layout(self.backbone, images.shape[-2:])
        maps = self.method.maps_from_capture(self.backbone, logits, self._capture, tags, images.shape[-2:],
                                             retain_graph=True).float()
        with torch.no_grad():
            if maps.shape[-2:] != size:
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
            present = (tags > 0)[:, :, None, None]
            refined = normalise_maps(maps) * present
            if self.pamr.enabled and self.pamr.iterations > 0:
                slots = tag_slots(tags)
                refined_slots = pamr(rgb.float(), gather_slots(refined, slots), iterations=self.pamr.iterations,
                                     dilations=self.pamr.dilations)
                refined = normalise_maps(scatter_slots(refined_slots, slots, tags.shape[1])) * present
            masks = self._saliency(size, layout, saliency, has_saliency, logits.shape[0])
            return self._rule(refined, tags, masks), masks

    def _saliency(self, size, layout, saliency, has_saliency, batch) -> list[Tensor | None]:
        """B entries: H×W bool (True = salient) or None."""
        if self.saliency.source == "none":
            return [None] * batch
        if self.tokencut is not None:
            keys = self._keys.keys.detach().float()
            return self.tokencut.from_keys(keys, layout, [size] * batch)
        if saliency is None or has_saliency is None:
            raise ValueError("refine.saliency.source=folder: pass the cropped saliency maps and has_saliency")
        missing = [i for i in range(batch) if not bool(has_saliency[i])]
        if missing and self.saliency.missing == "error":
            raise ValueError(f"refine.saliency.source=folder but images {missing} of the batch have no saliency "
                             "map (set refine.saliency.missing=none to label them without)")
        device = self._capture.attentions[0].device
        return [saliency[i].to(device) > self.saliency.threshold if bool(has_saliency[i]) else None
                for i in range(batch)]

    def _rule(self, maps: Tensor, tags: Tensor, saliency: list[Tensor | None]) -> Tensor:
        """The label rule, once for the images with saliency and once for those without."""
        out = torch.zeros(maps.shape[0], *maps.shape[-2:], dtype=torch.long, device=maps.device)
        with_map = [i for i, s in enumerate(saliency) if s is not None]
        without = [i for i, s in enumerate(saliency) if s is None]
        for group, salient in ((with_map, True), (without, False)):
            if not group:
                continue
            masks = torch.stack([saliency[i] for i in group]).to(maps.device) if salient else None
            out[group] = pseudo_labels(maps[group], tags[group], masks, alpha=self.rule.alpha, tau=self.rule.tau,
                                       conflict=self.rule.conflict, opening=self.rule.opening)
        return out


def _saliency_maps(samples, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """B×H×W float saliency resized to ``size`` as the folder source resizes (area when
    shrinking, bilinear when enlarging; zeros where absent) and the B-bool presence flags."""
    H, W = size
    maps = np.zeros((len(samples), H, W), np.float32)
    for i, sample in enumerate(samples):
        if sample.saliency is None:
            continue
        saliency = np.nan_to_num(np.asarray(sample.saliency, dtype=np.float32))
        if saliency.shape != (H, W):
            shrink = H < saliency.shape[0] or W < saliency.shape[1]
            saliency = cv2.resize(saliency, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        maps[i] = saliency
    return torch.from_numpy(maps), torch.tensor([s.saliency is not None for s in samples])


def evaluate_inloop_labels(segmenter: nn.Module, config, dataset: Dataset, batch_size: int = 8,
                           progress: bool = True) -> Evaluation:
    """Score the labels the training loop would make with the segmenter's current weights
    (eval mode) on whole images of ``dataset`` against its masks: its own pseudo-labels.

    Images are resized to multiples of the stride for the model, labels made at image size
    (as the offline flow does). Images that cannot be read or carry no tags are listed in
    ``missing``; a data set without masks raises DatasetError.
    """
    labeler = InLoopLabeler(config, segmenter.backbone)
    device = next(segmenter.parameters()).device
    result = Evaluation(ConfusionMatrix(dataset.num_classes + 1))
    bar = tqdm(total=len(dataset.ids), desc="evaluating in-loop labels", unit="img", disable=not progress)

    def failed(image_id: str, reason: str) -> None:
        result.missing[image_id] = reason
        bar.update(1)

    with eval_mode(segmenter), torch.enable_grad():
        for batch in same_size_batches(dataset, dataset.ids, batch_size, failed):
            size = batch[0].image.shape[:2]
            inputs = torch.stack([image_to_tensor(resize_image(s.image, model_input_size(size, segmenter.stride)))
                                  for s in batch]).to(device)
            rgb = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).to(device)
            tags = torch.from_numpy(np.stack([s.tags for s in batch])).to(device)
            saliency, has_saliency = _saliency_maps(batch, size)
            with labeler.capture():
                out = segmenter(inputs, with_head=False)
                labels, _ = labeler(out.logits, tags, inputs, rgb, saliency, has_saliency)
            for sample, label in zip(batch, labels.cpu().numpy()):
                if sample.mask is None:
                    raise DatasetError(f"image {sample.id}: no mask to evaluate against")
                result.confusion.update(label, sample.mask)
            bar.update(len(batch))
    bar.close()
    return result
