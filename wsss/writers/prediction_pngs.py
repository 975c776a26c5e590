"""The walks that write a segmenter's outputs for a whole data set.

    predict_dataset         OUT/<id>.png, VOC palette labels (``wsss predict``)
    write_foreground_maps   OUT/<id>.png, 0/255 foreground (self-training's saliency maps)

Both write OUT/manifest.jsonl and skip images whose PNG exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wsss.config import CrfConfig
from wsss.data.base import Dataset, Sample
from wsss.data.dataset_walk import Deferred, Walk, WalkFiles, run_dataset
from wsss.data.label_png import write_label_png, write_mask_png
from wsss.data.size_limit import at_source_size
from wsss.predict import Predictor, start_foreground_masks, start_probs_to_labels
from wsss.refine.crf import crf_executor, crf_overlaps

__all__ = ["predict_dataset", "write_foreground_maps"]


def predict_dataset(
    predictor: Predictor,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    crf: CrfConfig | None = None,
    batch_size: int = 8,
    ids: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Write OUT/<id>.png (VOC palette) for ``ids`` (default: every image) of ``dataset``.

    The walk is ``wsss.data.dataset_walk.run_dataset``: existing PNGs are skipped, images of one size
    share a forward, an unreadable image is recorded in OUT/manifest.jsonl and the run goes on.
    Returns counts {ok, skipped, failed}. With ``crf.overlap`` (auto: the segmenter on a GPU)
    the pool refines a batch while the next batch is predicted.
    """
    out = Path(out_dir)
    with crf_executor(crf) as executor:
        def compute(batch: list[Sample]) -> list[np.ndarray] | Deferred:
            images = [sample.image for sample in batch]
            pending = start_probs_to_labels(images, predictor(images), crf, executor)
            return _deferred_if_overlapping(pending, crf, predictor.device)

        def write(sample: Sample, label: np.ndarray) -> None:
            write_label_png(out / f"{sample.id}.png", at_source_size(label, sample))

        walk = Walk(ids=ids, batch_size=batch_size, desc="predicting", progress=progress, needs_tags=False)
        return run_dataset(dataset, compute, write, walk, WalkFiles(out))


def write_foreground_maps(
    predictor: Predictor,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    threshold: float = 0.5,
    batch_size: int = 8,
    progress: bool = True,
    crf: CrfConfig | None = None,
) -> dict:
    """Write OUT/<id>.png, 255 where the segmenter's foreground is (``start_foreground_masks``: its
    probability 1 − P(background) above ``threshold``, or the two-label CRF's decision when
    ``crf`` is given) and 0 elsewhere (H×W uint8 at the image's size): the saliency maps of
    self-training (``refine.saliency.source: segmenter``), read back as a saliency folder.

    The walk is ``wsss.data.dataset_walk.run_dataset`` (existing PNGs skipped, failures in
    OUT/manifest.jsonl). Returns counts {ok, skipped, failed}. With ``crf.overlap`` (auto: the
    segmenter on a GPU) the pool refines a batch while the next batch is predicted.
    """
    out = Path(out_dir)
    with crf_executor(crf) as executor:
        def compute(batch: list[Sample]) -> list[np.ndarray] | Deferred:
            images = [sample.image for sample in batch]
            pending = start_foreground_masks(images, predictor(images), threshold, crf, executor)
            return _deferred_if_overlapping(pending, crf, predictor.device)

        def write(sample: Sample, mask: np.ndarray) -> None:
            write_mask_png(out / f"{sample.id}.png", at_source_size(mask, sample))

        walk = Walk(batch_size=batch_size, desc="foreground maps", progress=progress, needs_tags=False)
        return run_dataset(dataset, compute, write, walk, WalkFiles(out))


def _deferred_if_overlapping(pending: Callable[[], list[np.ndarray]], crf: CrfConfig | None,
                             device: torch.device) -> list[np.ndarray] | Deferred:
    """A batch's results for ``run_dataset``: left to finish while the next batch is predicted
    when the CRF overlaps (``crf_overlaps``), else waited for here."""
    return Deferred(pending) if crf is not None and crf_overlaps(crf, device) else pending()
