"""Test helpers: train from a whole ``Config`` through the steps' entries, as the command line does."""

from __future__ import annotations

from pathlib import Path

from wsss.config import Config
from wsss.layout import RunLayout
from wsss.steps.classifier_step import train_classifier
from wsss.steps.segmenter_step import score_segmenter, train_segmenter
from wsss.train.run_control import RunControl


def classifier_of(config: Config, **control) -> Path:
    """``wsss train classifier`` of ``config``: RUN/classifier/classifier.pt (``control``: RunControl's fields)."""
    return train_classifier(config, RunControl(**control))


def segmenter_of(config: Config, score: bool = True, **control) -> Path:
    """``wsss train segmenter`` of ``config`` (scored on the validation split when it finishes
    and ``score``): its segmenter.pt, or last.pt when stopped early."""
    path = train_segmenter(config, RunControl(**control))
    if score and path == RunLayout(config.run_dir).segmenter(config.train.segmenter.mode).final:
        score_segmenter(config, path, progress=False)
    return path
