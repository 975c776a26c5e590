"""Test helpers: train from a whole ``Config`` the way the command line does (the library
functions take its sections)."""

from __future__ import annotations

from pathlib import Path

from wsss.config import Config
from wsss.layout import RunLayout
from wsss.steps.segmenter_step import backbone_init, labels_dir, score_segmenter
from wsss.train.classifier_training import train_classifier
from wsss.train.segmenter_training import train_segmenter


def classifier_of(config: Config, **kwargs) -> Path:
    """``wsss train classifier`` of ``config``: RUN/classifier/classifier.pt."""
    return train_classifier(config.data, config.model, config.train.classifier, config.train.device,
                            RunLayout(config.run_dir).classifier, **kwargs)


def segmenter_of(config: Config, score: bool = True, **kwargs) -> Path:
    """``wsss train segmenter`` of ``config`` (scored on the validation split when it finishes
    and ``score``): its segmenter.pt, or last.pt when stopped early."""
    run, settings = RunLayout(config.run_dir), config.train.segmenter
    files = run.segmenter(settings.mode)
    path = train_segmenter(config.data, config.model, settings, config.cam, config.refine, config.train.device, files,
                           init=backbone_init(settings.init, run), labels_dir=labels_dir(settings, run), **kwargs)
    if score and path == files.final:
        score_segmenter(path, config.data, config.predict, config.cam, config.refine, settings.mode,
                        config.train.device, files, progress=False)
    return path
