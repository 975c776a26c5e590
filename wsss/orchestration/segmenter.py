"""The flows' two calls into the segmenter (``wsss.train.segmenter``, ``wsss.predict``).

``train`` trains (or resumes) the segmenter of a config and returns segmenter.pt (and, when
the validation split has masks, writes its predictions there: ``validation_predictions``);
``predict_ids`` writes predictions for chosen images of a data set, skipping those whose PNG
exists and recording every outcome in OUT/manifest.jsonl (what the inbox needs: only what is
new, never a second time).
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.data.base import Dataset
from wsss.data.batching import Manifest, same_size_batches
from wsss.data.label_png import write_label_png


def default_segmenter(config) -> Path:
    """Where ``wsss train segmenter`` leaves the segmenter of ``config`` (its mode decides)."""
    from wsss.train.segmenter import SegmenterRun

    return SegmenterRun.of(config).final


def validation_predictions(config) -> Path:
    """Where segmenter training writes its predictions of the validation split (when it has masks)."""
    from wsss.train.segmenter import SegmenterRun

    return SegmenterRun.of(config).val_predictions


def train(config, restart: bool = False) -> Path:
    """Train or resume the segmenter of ``config``; returns its segmenter.pt."""
    from wsss.train.segmenter import train_segmenter

    return Path(train_segmenter(config, restart=restart, progress=False))


def predict_ids(config, checkpoint: str | os.PathLike, dataset: Dataset, ids: list[str],
                out_dir: str | os.PathLike) -> dict:
    """Segment ``ids`` of ``dataset`` with the segmenter at ``checkpoint`` (settings:
    ``config.predict``) into OUT/<id>.png; returns counts {ok, skipped, failed}."""
    from wsss.predict import Predictor, probs_to_labels
    from wsss.refine.crf import crf_executor
    from wsss.train.checkpoint import resolve_device
    from wsss.train.segmenter import load_segmenter

    out = Path(out_dir)
    settings = config.predict
    segmenter, classes, _ = load_segmenter(checkpoint, resolve_device(config.train.device))
    if classes != dataset.classes:
        raise ValueError(f"{checkpoint}: classes {classes} differ from the data set's {dataset.classes}")
    predictor = Predictor(segmenter, settings.scales, settings.flip)
    crf = config.refine.crf if settings.crf else None
    with Manifest(out / "manifest.jsonl") as manifest, crf_executor(crf) as executor:
        todo = manifest.unfinished(ids, lambda image_id: out / f"{image_id}.png")
        batches = same_size_batches(dataset, todo, settings.batch_size,
                                    lambda image_id, reason: manifest.record(image_id, "failed", reason), needs_tags=False)
        for batch in batches:
            images = [sample.image for sample in batch]
            for sample, label in zip(batch, probs_to_labels(images, predictor(images), crf, executor)):
                write_label_png(out / f"{sample.id}.png", label)
                manifest.record(sample.id, "ok")
        return dict(manifest.counts)
