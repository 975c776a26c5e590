"""Scoring a trained segmenter, once per run: its predictions and its own in-loop labels.

    scores = evaluate_segmenter(predictor, val_set, crf=refine.crf, out_dir=RUN/.../val_predictions)
    scores.final().confusion.miou            # all images (the CRF's labels when crf is given)
    scores.argmax(ids=stage_ids)             # the argmax labels, on a subset of the images
    labels = evaluate_inloop_labels(segmenter, cam.start_block, refine, val_set)

Scores are kept per image, so the scores on any subset (e.g. the stage table's images) come
from the same single pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsss.attention.base import eval_mode
from wsss.config import CrfConfig, RefineConfig
from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.label_png import write_label_png
from wsss.data.dataset_walk import Walk, run_dataset
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.evaluate import Evaluation
from wsss.models.vit_geometry import model_inputs
from wsss.predict import Predictor, probs_to_labels
from wsss.refine.crf import crf_executor
from wsss.refine.inloop import InLoopLabeler
from wsss.refine.saliency import FolderSaliency

__all__ = ["SegmenterScores", "evaluate_segmenter", "evaluate_inloop_labels"]


@dataclass
class SegmenterScores:
    """Per-image confusion matrices of the final labels (the CRF's when a CRF was given, else
    the argmax), of the argmax, and (with a guided filter) of the argmax before the filter, and
    the images that could not be scored (id → reason)."""

    num_classes: int
    final_by_image: dict[str, ConfusionMatrix] = field(default_factory=dict)
    argmax_by_image: dict[str, ConfusionMatrix] = field(default_factory=dict)
    unfiltered_by_image: dict[str, ConfusionMatrix] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    crf: bool = False
    filtered: bool = False

    def _total(self, by_image: dict[str, ConfusionMatrix], ids: Iterable[str] | None) -> Evaluation:
        wanted = None if ids is None else set(ids)
        total = ConfusionMatrix(self.num_classes)
        for image_id, matrix in by_image.items():
            if wanted is None or image_id in wanted:
                total.merge(matrix)
        missing = {i: r for i, r in self.missing.items() if wanted is None or i in wanted}
        return Evaluation(total, missing)

    def final(self, ids: Iterable[str] | None = None) -> Evaluation:
        """The final labels' scores on ``ids`` (None: every image scored)."""
        return self._total(self.final_by_image, ids)

    def argmax(self, ids: Iterable[str] | None = None) -> Evaluation:
        """The argmax labels' scores on ``ids`` (= ``final`` without a CRF)."""
        return self._total(self.argmax_by_image, ids)

    def unfiltered(self, ids: Iterable[str] | None = None) -> Evaluation:
        """The argmax before the guided filter, on ``ids`` (= ``argmax`` without a filter)."""
        return self._total(self.unfiltered_by_image if self.filtered else self.argmax_by_image, ids)


def _ground_truth(sample: Sample) -> np.ndarray:
    if sample.mask is None:
        raise DatasetError(f"image {sample.id}: no mask to evaluate against")
    return sample.mask


def evaluate_segmenter(
    predictor: Predictor,
    dataset: Dataset,
    crf: CrfConfig | None = None,
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> SegmenterScores:
    """Score the predictions on every image of ``dataset`` against its masks, with and (when
    ``crf`` is given) without the CRF, and (when the predictor has a guided filter) the argmax
    before the filter.

    out_dir: also write the final predictions there as <id>.png (for ``wsss evaluate`` or
    viewing; rewritten, never skipped). Images that cannot be read are listed in ``missing``;
    a data set without masks raises DatasetError.
    """
    num = dataset.num_classes + 1
    filtered = predictor.guided is not None
    scores = SegmenterScores(num, crf=crf is not None, filtered=filtered)
    out = None if out_dir is None else Path(out_dir)
    with crf_executor(crf) as executor:
        def compute(batch: list[Sample]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
            images = [sample.image for sample in batch]
            raw = predictor.averaged(images)
            probs = predictor.refine(images, raw)
            plain = probs_to_labels(images, probs)
            final = plain if crf is None else probs_to_labels(images, probs, crf, executor)
            unfiltered = probs_to_labels(images, raw) if filtered else [None] * len(images)
            return list(zip(final, plain, unfiltered))

        def write(sample: Sample, labels: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> None:
            final, plain, unfiltered = labels
            gt = _ground_truth(sample)
            scores.final_by_image[sample.id] = ConfusionMatrix(num).update(final, gt)
            scores.argmax_by_image[sample.id] = (scores.final_by_image[sample.id] if crf is None
                                                 else ConfusionMatrix(num).update(plain, gt))
            if unfiltered is not None:
                scores.unfiltered_by_image[sample.id] = ConfusionMatrix(num).update(unfiltered, gt)
            if out is not None:
                write_label_png(out / f"{sample.id}.png", final)

        run_dataset(dataset, compute, write, Walk(batch_size=batch_size, desc="evaluating segmenter", progress=progress,
                                                  on_failure=scores.missing.__setitem__, needs_tags=False,
                                                  needs_masks=True))
    return scores


def evaluate_inloop_labels(segmenter: nn.Module, start_block: int | None, refine: RefineConfig, dataset: Dataset,
                           batch_size: int = 8, progress: bool = True) -> Evaluation:
    """Score the labels the training loop would make with the segmenter's current weights
    (eval mode) on whole images of ``dataset`` against its masks: its own pseudo-labels.

    Images are resized to multiples of the stride for the model, labels made at image size
    (as the offline flow does); folder saliency is read and binarised as the offline chain
    does. Images that cannot be read or carry no tags are listed in ``missing``; a data set
    without masks raises DatasetError.
    """
    labeler = InLoopLabeler(segmenter.backbone, start_block, refine)
    folder = None
    if refine.saliency.source == "folder":
        folder = FolderSaliency(dataset, threshold=refine.saliency.threshold, missing=refine.saliency.missing)
    device = next(segmenter.parameters()).device
    result = Evaluation(ConfusionMatrix(dataset.num_classes + 1))

    def compute(batch: list[Sample]) -> list[np.ndarray]:
        size = batch[0].image.shape[:2]
        inputs = model_inputs(batch, segmenter.stride).to(device)
        rgb = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).to(device)
        tags = torch.from_numpy(np.stack([s.tags for s in batch])).to(device)
        masks = folder(batch, size=size) if folder is not None else None
        with labeler.capture():
            out = segmenter(inputs, with_head=False)
            labels, _ = labeler(out.logits, tags, inputs, rgb, masks)
        return list(labels.cpu().numpy())

    def write(sample: Sample, label: np.ndarray) -> None:
        result.confusion.update(label, _ground_truth(sample))

    with eval_mode(segmenter), torch.enable_grad():
        run_dataset(dataset, compute, write, Walk(batch_size=batch_size, desc="evaluating in-loop labels",
                                                  progress=progress, on_failure=result.missing.__setitem__,
                                                  needs_masks=True))
    return result
