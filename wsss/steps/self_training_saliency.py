"""Self-training's saliency (``refine.saliency.source: segmenter``): its steps, and the maps as the
rest of a run sees them.

    round 1: pseudo-labels of round1_config(config) (no saliency)       RUN/self_training/pseudo_labels/
           → train_round1_segmenter(config, classifier)                 RUN/self_training/segmenter/
           → write_round1_saliency(config, segmenter)                   RUN/self_training/saliency/<id>.png

The ``self-training`` flow (flows/self_training.py) runs them; every later step labels with the
maps as a saliency folder. ``saliency_config`` turns a config into that folder config, so the
flows and the command line read the same maps the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.layout import RunLayout
from wsss.models.checkpoint import load_segmenter, resolve_device
from wsss.predict import Predictor
from wsss.steps.segmenter_inputs import backbone_init
from wsss.train import segmenter_training
from wsss.train.run_control import RunControl
from wsss.train.segmenter_training import SegmenterRecipe
from wsss.writers.prediction_pngs import write_foreground_maps

__all__ = ["saliency_config", "describe_saliency", "round1_config", "train_round1_segmenter", "write_round1_saliency"]


def saliency_config(config: Config, require: bool = False) -> Config:
    """For ``source: segmenter``: ``config`` with ``refine.saliency.source: folder`` and
    ``data.saliency_dir`` = RUN/self_training/saliency (maps binarised at 0.5, a missing map an
    error). Any other source: ``config`` itself. require: raise FileNotFoundError when the
    folder does not exist yet (the self-training flow has not run for this run folder)."""
    if config.refine.saliency.source != "segmenter":
        return config
    folder = RunLayout(config.run_dir).self_training.saliency
    if require and not folder.is_dir():
        raise FileNotFoundError(
            f"refine.saliency.source=segmenter: no self-training maps in {folder}; make them first with "
            "`wsss flow run self-training` (the pipeline and wsss demo do it themselves), or choose "
            "another refine.saliency.source")
    saliency = config.refine.saliency.model_copy(update={"source": "folder", "threshold": 0.5, "missing": "error"})
    return config.model_copy(update={
        "data": config.data.model_copy(update={"saliency_dir": folder}),
        "refine": config.refine.model_copy(update={"saliency": saliency}),
    })


def describe_saliency(config: Config) -> str:
    """The saliency source of ``config`` in words, for logs and reports."""
    source = config.refine.saliency.source
    if source == "segmenter":
        return (f"segmenter (self-training: the foreground of a first-round segmenter trained on labels made "
                f"without saliency, {RunLayout(config.run_dir).self_training.saliency})")
    return source


def round1_config(config: Config) -> Config:
    """The settings of self-training's first round: ``config`` with ``refine.saliency.source: none``."""
    saliency = config.refine.saliency.model_copy(update={"source": "none"})
    return config.model_copy(update={"refine": config.refine.model_copy(update={"saliency": saliency})})


def train_round1_segmenter(config: Config, classifier: str | os.PathLike, control: RunControl = RunControl()) -> Path:
    """The first-round segmenter: two stage, ``refine.saliency.self_training.steps`` steps on the
    first round's labels (RUN/self_training/pseudo_labels), its backbone started as the final
    segmenter's will be (``train.segmenter.init``; ``classifier`` is this run's classifier.pt).
    Returns its segmenter.pt."""
    run = RunLayout(config.run_dir)
    files, steps = run.self_training, config.refine.saliency.self_training.steps
    settings = config.train.segmenter.model_copy(update={"mode": "two_stage", "steps": steps})
    print(f"self-training: a first-round segmenter, {steps} steps on {files.pseudo_labels}")
    init = Path(classifier) if settings.init == "classifier" else backbone_init(settings.init, run)
    recipe = SegmenterRecipe(config.data, config.model, settings, config.cam, round1_config(config).refine,
                             config.train.device)
    return Path(segmenter_training.train_segmenter(recipe, files.segmenter, init=init, labels_dir=files.pseudo_labels,
                                                   control=control))


def write_round1_saliency(config: Config, segmenter: str | os.PathLike, progress: bool = False) -> dict[str, dict]:
    """The first-round segmenter's foreground (``refine.saliency.self_training``: threshold,
    scales, flip, CRF with the ``refine.crf`` kernels) on the training and validation images,
    as RUN/self_training/saliency/<id>.png; returns the counts per split."""
    settings = config.refine.saliency.self_training
    model, _, _ = load_segmenter(segmenter, resolve_device(config.train.device))
    predictor = Predictor(model, settings.scales, settings.flip)
    folder = RunLayout(config.run_dir).self_training.saliency
    written = {}
    for split in dict.fromkeys(s for s in (config.data.train_split, config.data.val_split) if s is not None):
        written[split] = write_foreground_maps(predictor, open_dataset(config.data, split), folder,
                                               threshold=settings.threshold, batch_size=config.predict.batch_size,
                                               progress=progress, crf=config.refine.crf if settings.crf else None)
        print(f"self-training saliency ({split}): {written[split]}")
    return written
