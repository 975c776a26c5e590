"""``wsss pseudo-label`` and the flows' shards: the offline chain over a data set, on disk.

    OUT/<id>.png          pseudo-label, VOC palette (0 background, 1..C, 255 ignore), atomic write
    OUT/maps/<id>.npz     optional: refined maps of the tagged classes (as ``wsss cam`` writes them)
                          and the classifier's probabilities of those classes ("probs")
    OUT/doubt/<id>.png    1 where the confidence doubts the label (the CRF relabelled it, or it is
                          ignored), else 0: what the review page marks
    OUT/manifest.jsonl    every image's outcome {"id", "status": "ok"|"failed", "reason"}; an ok
                          entry holds the label's "confidence" (``wsss.refine.confidence``)

The walk is ``wsss.data.dataset_walk.run_dataset``: images whose PNG exists are skipped, so a re-run
finishes an interrupted one; an image that cannot be read fails alone. With
``refine.crf.overlap`` (``crf_overlaps``: auto, when the maps are on a GPU) each batch's CRF
jobs are left to the labeler's pool while the next batch's maps are computed
(``PseudoLabeler.start``); else each batch is written before the next is computed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss.data.npz_maps import write_npz
from wsss.data.base import Dataset, Sample
from wsss.data.label_png import write_label_png
from wsss.data.dataset_walk import Deferred, Walk, WalkFiles, run_dataset
from wsss.data.size_limit import at_source_size
from wsss.refine.chain import ChainResult, PseudoLabeler, SavedMapsLabeler
from wsss.refine.confidence import DOUBT, doubt_mask, label_confidence
from wsss.refine.crf import crf_overlaps

__all__ = ["write_pseudo_labels"]


def write_pseudo_labels(
    labeler: PseudoLabeler | SavedMapsLabeler,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    save_maps: bool = False,
    ids: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Write pseudo-labels for ``ids`` (default: every image); returns counts {ok, skipped, failed}."""
    out = Path(out_dir)
    crf = labeler.chain.crf
    overlap = crf is not None and labeler.chain.executor is not None and crf_overlaps(crf, labeler.device)

    def compute(batch: list[Sample]) -> list[tuple[ChainResult, int]] | Deferred:
        pending = labeler.start(batch)
        results = lambda: [(result, i) for result in [pending()] for i in range(len(batch))]  # noqa: E731
        return Deferred(results) if overlap else results()

    def write(sample: Sample, item: tuple[ChainResult, int]) -> dict:
        result, i = item
        probs = None if result.probs is None else result.probs[i]
        if save_maps:
            present = np.flatnonzero(sample.tags)
            extra = {} if probs is None else {"probs": probs[present].cpu().numpy().astype(np.float32)}
            write_npz(out / "maps" / f"{sample.id}.npz",
                      maps=result.refined[i][present].cpu().numpy().astype(np.float16),
                      classes=present.astype(np.int16), class_names=np.array([dataset.classes[c] for c in present]),
                      **extra)
        before_crf = result.sam[i] if result.sam is not None else result.rule[i]
        doubt = doubt_mask(before_crf, result.labels[i], result.refined[i], sample.tags).astype(np.uint8)
        write_label_png(out / DOUBT / f"{sample.id}.png", at_source_size(doubt, sample))  # before the label: a
        # finished label (its PNG) always has its doubt
        write_label_png(out / f"{sample.id}.png", at_source_size(result.labels[i].cpu().numpy().astype(np.uint8), sample))
        return {"confidence": label_confidence(sample.tags, probs, result.refined[i], before_crf, result.labels[i])}

    out.mkdir(parents=True, exist_ok=True)
    walk = Walk(ids=ids, batch_size=batch_size, desc="pseudo-labels", progress=progress, size_key=labeler.size_key)
    return run_dataset(dataset, compute, write, walk, WalkFiles(out))
