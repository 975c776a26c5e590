"""The segmenter steps: train it (single stage with double backward, or two stage on the
pseudo-labels), then score it once on the validation split.

    path = train_segmenter(config)                   # RUN/segmenter[_two_stage]/segmenter.pt
    result = score_segmenter(config, path)           # metrics.json, val_predictions/; None without masks
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.eval.segmenter_scores import evaluate_inloop_labels, evaluate_segmenter
from wsss.files import write_json
from wsss.layout import RunLayout
from wsss.models.checkpoint import load_segmenter, resolve_device
from wsss.predict import Predictor
from wsss.report.build import SegmenterResult
from wsss.steps.label_plan import has_masks
from wsss.steps.run_record import record_settings
from wsss.steps.segmenter_inputs import backbone_init, labels_dir
from wsss.steps.self_training_saliency import saliency_config
from wsss.train import segmenter_training
from wsss.train.run_control import RunControl
from wsss.train.segmenter_training import SegmenterRecipe

__all__ = ["train_segmenter", "score_segmenter", "segmenter_recipe"]


def segmenter_recipe(config: Config) -> SegmenterRecipe:
    """The sections a segmenter run reads, from ``config``."""
    return SegmenterRecipe(config.data, config.model, config.train.segmenter, config.cam, config.refine,
                           config.train.device)


def train_segmenter(config: Config, control: RunControl = RunControl(), init: Path | None = None) -> Path:
    """Train (or resume) the segmenter of ``config`` (``train.segmenter``) into
    RUN/segmenter (single stage) or RUN/segmenter_two_stage (on ``train.segmenter.labels_dir``,
    default RUN/pseudo_labels); records the settings in RUN/config.yaml. init: the classifier.pt
    that starts the backbone (None: as ``train.segmenter.init`` says). Single stage with
    ``refine.saliency.source: segmenter`` labels in the loop with self-training's maps (they must
    exist; two stage reads them too, for the saliency loss, when they do). Returns segmenter.pt,
    or last.pt when ``control.stop_after`` stopped it early."""
    settings, run = config.train.segmenter, RunLayout(config.run_dir)
    record_settings(config)
    config = _with_saliency(config)
    return segmenter_training.train_segmenter(segmenter_recipe(config), run.segmenter(settings.mode),
                                              init=init or backbone_init(settings.init, run),
                                              labels_dir=labels_dir(settings, run), control=control)


def _with_saliency(config: Config) -> Config:
    """With ``refine.saliency.source: segmenter``, self-training's maps as the saliency folder:
    single stage labels with them in the loop (they must exist); two stage reads them for the
    saliency loss when they exist."""
    single = config.train.segmenter.mode == "single_stage"
    if single or RunLayout(config.run_dir).self_training.saliency.is_dir():
        return saliency_config(config, require=single)
    return config


def score_segmenter(config: Config, checkpoint: str | os.PathLike, progress: bool = True) -> SegmenterResult | None:
    """Score the segmenter at ``checkpoint`` on ``data.val_split``, once: its predictions
    (``predict`` settings; written to its folder's val_predictions/) with and without the CRF
    (the ``refine.crf`` kernels, when ``predict.crf``) and without the guided filter (when
    ``predict.guided_filter`` has a radius), and, single stage, its own in-loop labels
    (``cam.start_block``, ``refine``). Writes metrics.json and prints the scores. Returns None
    (and says why) when the split is missing or has no masks."""
    mode = config.train.segmenter.mode
    config = _with_saliency(config)
    data, predict, refine = config.data, config.predict, config.refine
    files = RunLayout(config.run_dir).segmenter(mode)
    if data.val_split is None:
        print("no data.val_split: skipping the validation score")
        return None
    val_set = open_dataset(data, data.val_split)
    if not has_masks(val_set):
        print(f"validation split {data.val_split!r} has no masks: skipping the validation score")
        return None
    segmenter, classes, _ = load_segmenter(checkpoint, resolve_device(config.train.device))
    predictor = Predictor.of(segmenter, predict)
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
    if scores.filtered:
        metrics["segmenter_without_filter"] = scores.unfiltered().to_dict(classes)
        print(f"the argmax without the guided filter (radius {predictor.guided_radius} px)"
              f"{' or the CRF' if predict.crf else ''}: mIoU {scores.unfiltered().confusion.miou:.4f}")
    inloop = None
    if mode == "single_stage":
        inloop = evaluate_inloop_labels(segmenter, config.cam.start_block, refine, val_set,
                                        batch_size=predict.batch_size, progress=progress)
        metrics["pseudo_labels"] = inloop.to_dict(classes)
        print(f"its in-loop pseudo-labels (GETAM → PAMR → label rule, final weights): mIoU {inloop.confusion.miou:.4f}")
    write_json(files.metrics, metrics)
    print(f"val mIoU: segmenter {final.confusion.miou:.4f}; metrics in {files.metrics}")
    return SegmenterResult(mode, scores, classes, predict.model_dump(mode="json"), inloop, len(val_set.ids))
