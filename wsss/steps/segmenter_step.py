"""The segmenter steps of the flows and the command line, beyond training itself.

    init = backbone_init(settings.init, run)          # the classifier.pt that starts the backbone
    result = score_segmenter(checkpoint, ...)         # scored once: validation split (+ in-loop labels)
    counts = predict_ids(checkpoint, dataset, ids, out, predict, crf, device)   # only what is new;
                                                      # on_progress=...: a report per chunk of ids
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import CamConfig, CrfConfig, DataConfig, PredictConfig, RefineConfig, SegmenterTrainConfig
from wsss.data import open_dataset
from wsss.data.base import Dataset
from wsss.eval.segmenter_scores import evaluate_inloop_labels, evaluate_segmenter
from wsss.files import write_json
from wsss.layout import RunLayout, SegmenterFiles
from wsss.models.checkpoint import load_segmenter, resolve_device
from wsss.steps.label_plan import has_masks
from wsss.predict import Predictor
from wsss.writers.prediction_pngs import predict_dataset
from wsss.progress import ProgressCallback, RateMeter, format_rate, progress_line
from wsss.report.build import SegmenterResult

__all__ = ["backbone_init", "labels_dir", "score_segmenter", "predict_ids"]


def backbone_init(init: str | os.PathLike, run: RunLayout) -> Path | None:
    """``train.segmenter.init`` → the classifier.pt that starts the backbone: None for
    ``pretrained``, the run's own classifier for ``classifier``, else the path given."""
    if init == "pretrained":
        return None
    if init == "classifier":
        return run.classifier.final
    return Path(init)


def labels_dir(settings: SegmenterTrainConfig, run: RunLayout) -> Path | None:
    """Two stage: the pseudo-label folder (``labels_dir``, default the run's); single stage: None."""
    if settings.mode == "single_stage":
        return None
    return Path(settings.labels_dir) if settings.labels_dir is not None else run.pseudo_labels


def score_segmenter(checkpoint: str | os.PathLike, data: DataConfig, predict: PredictConfig, cam: CamConfig,
                    refine: RefineConfig, mode: str, device: str, files: SegmenterFiles,
                    progress: bool = True) -> SegmenterResult | None:
    """Score the segmenter at ``checkpoint`` on the validation split, once: its predictions
    (``predict`` settings; written to ``files.val_predictions``) with and without the CRF, and,
    single stage, its own in-loop labels. Writes ``files.metrics`` and prints the scores.
    Returns None (and says why) when the split is missing or has no masks."""
    if data.val_split is None:
        print("no data.val_split: skipping the validation score")
        return None
    val_set = open_dataset(data, data.val_split)
    if not has_masks(val_set):
        print(f"validation split {data.val_split!r} has no masks: skipping the validation score")
        return None
    segmenter, classes, _ = load_segmenter(checkpoint, resolve_device(device))
    predictor = Predictor(segmenter, predict.scales, predict.flip)
    scores = evaluate_segmenter(predictor, val_set, crf=refine.crf if predict.crf else None,
                                batch_size=predict.batch_size, out_dir=files.val_predictions, progress=progress)
    final = scores.final()
    metrics = {"mode": mode, "split": data.val_split, "images": len(val_set.ids),
               "predict": predict.model_dump(mode="json"), "segmenter": final.to_dict(classes)}
    print(f"\nsegmenter ({mode}) on split {data.val_split}:")
    print(final.summary(classes))
    if predict.crf:
        metrics["segmenter_without_crf"] = scores.argmax().to_dict(classes)
        print(f"without the CRF: mIoU {scores.argmax().confusion.miou:.4f}")
    inloop = None
    if mode == "single_stage":
        inloop = evaluate_inloop_labels(segmenter, cam.start_block, refine, val_set, batch_size=predict.batch_size,
                                        progress=progress)
        metrics["pseudo_labels"] = inloop.to_dict(classes)
        print(f"its in-loop pseudo-labels (GETAM → PAMR → label rule, final weights): mIoU {inloop.confusion.miou:.4f}")
    write_json(files.metrics, metrics)
    print(f"val mIoU: segmenter {final.confusion.miou:.4f}; metrics in {files.metrics}")
    return SegmenterResult(mode, scores, classes, predict.model_dump(mode="json"), inloop, len(val_set.ids))


def predict_ids(checkpoint: str | os.PathLike, dataset: Dataset, ids: list[str], out_dir: str | os.PathLike,
                predict: PredictConfig, crf: CrfConfig, device: str, on_progress: ProgressCallback | None = None,
                chunk_size: int = 32) -> dict:
    """Segment ``ids`` of ``dataset`` with the segmenter at ``checkpoint`` (``predict``
    settings, the ``refine.crf`` kernels when ``predict.crf``) into OUT/<id>.png, skipping
    those already there; returns counts {ok, skipped, failed}. on_progress(done, total,
    stats): called after each ``chunk_size`` ids (the model is loaded once) with the counts so
    far, images/s, seconds_left and ``line``."""
    segmenter, classes, _ = load_segmenter(checkpoint, resolve_device(device))
    if classes != dataset.classes:
        raise ValueError(f"{checkpoint}: classes {classes} differ from the data set's {dataset.classes}")
    predictor = Predictor(segmenter, predict.scales, predict.flip)
    if on_progress is None:
        return predict_dataset(predictor, dataset, out_dir, crf=crf if predict.crf else None,
                               batch_size=predict.batch_size, ids=ids, progress=False)
    counts, meter = {"ok": 0, "failed": 0, "skipped": 0}, RateMeter(len(ids))
    for start in range(0, len(ids), max(1, chunk_size)):
        chunk = ids[start:start + max(1, chunk_size)]
        done = predict_dataset(predictor, dataset, out_dir, crf=crf if predict.crf else None,
                               batch_size=predict.batch_size, ids=chunk, progress=False)
        counts = {k: counts[k] + done.get(k, 0) for k in counts}
        finished = start + len(chunk)
        rate, left = meter.read(finished)
        line = progress_line("predictions:", finished, len(ids), [f"{k} {v}" for k, v in counts.items()],
                             [format_rate(rate, "img")], left, unit="images")
        on_progress(finished, len(ids), {**counts, "line": line, "images_per_s": rate, "seconds_left": left,
                                         "elapsed_s": meter.elapsed()})
    return counts
