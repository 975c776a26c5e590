"""The predict step: a trained segmenter's labels for a folder of images or a data set.

    counts = predict_images(config, "runs/demo/segmenter_two_stage/segmenter.pt", "photos/", "out/")

OUT/<id>.png (VOC palette: 0 background, 1..C), OUT/manifest.jsonl, OUT/source.json (the
segmenter's digest and the ``predict`` settings: a folder of other settings is refused).
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data.base import Dataset
from wsss.data.image_folder import ImageFolder
from wsss.lifetime import hold_folder
from wsss.models.checkpoint import load_segmenter, resolve_device
from wsss.predict import Predictor
from wsss.progress import ProgressCallback, RateMeter, format_rate, progress_line
from wsss.steps.provenance import claim_output_dir, prediction_source
from wsss.steps.worker_cache import checkpoint_digest
from wsss.writers.prediction_pngs import predict_dataset

__all__ = ["predict_images"]


def predict_images(config: Config, checkpoint: str | os.PathLike, images: str | os.PathLike | Dataset,
                   out: str | os.PathLike, ids: list[str] | None = None, strict_source: bool = True,
                   on_progress: ProgressCallback | None = None) -> dict:
    """Segment ``images`` (a folder of images of any sizes, or a data set; ``ids``: only these,
    None: all) with the segmenter at ``checkpoint`` into ``out``, skipping what is there.

    Settings: ``predict`` (scales, flip, CRF with the ``refine.crf`` kernels, batch size),
    ``train.device``, the size limit of ``data``. strict_source: refuse a folder predicted with
    another segmenter or settings (False: keep its files, go on). on_progress(done, total, stats):
    called after every ``flow.shard_size`` images (counts so far, images_per_s, seconds_left,
    ``line``; the model is loaded once). Returns the counts {ok, skipped, failed}."""
    settings, data = config.predict, config.data
    crf = config.refine.crf if settings.crf else None
    with hold_folder(out):
        segmenter, classes, _ = load_segmenter(checkpoint, resolve_device(config.train.device))
        if isinstance(images, Dataset):
            dataset = images
            if dataset.classes != classes:
                raise ValueError(f"{checkpoint}: classes {classes} differ from the data set's {dataset.classes}")
        else:
            dataset = ImageFolder(Path(images), classes).limit_size(data.max_side, data.oversize)
        source = prediction_source(checkpoint_digest(checkpoint), settings, crf, data)
        claim_output_dir(out, {**source, "classes": classes}, strict=strict_source)
        predictor = Predictor.of(segmenter, settings)
        ids = list(dataset.ids if ids is None else ids)
        if on_progress is None:
            return predict_dataset(predictor, dataset, out, crf=crf, batch_size=settings.batch_size, ids=ids)
        counts, meter, chunk = {"ok": 0, "failed": 0, "skipped": 0, "redone": 0}, RateMeter(len(ids)), config.flow.shard_size
        for start in range(0, len(ids), chunk):
            done = predict_dataset(predictor, dataset, out, crf=crf, batch_size=settings.batch_size,
                                   ids=ids[start:start + chunk], progress=False)
            counts = {k: counts[k] + done.get(k, 0) for k in counts}
            finished = min(start + chunk, len(ids))
            rate, left = meter.read(finished)
            line = progress_line("predictions:", finished, len(ids), [f"{k} {v}" for k, v in counts.items() if v or k != "redone"],
                                 [format_rate(rate, "img")], left, unit="images")
            on_progress(finished, len(ids), {**counts, "line": line, "images_per_s": rate, "seconds_left": left,
                                             "elapsed_s": meter.elapsed()})
        return counts
