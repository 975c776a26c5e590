"""The classifier steps: train it from the tags, then the quality gate that stops a run whose
classifier is near chance before it writes a pseudo-label.

    path = train_classifier(config)                  # RUN/classifier/classifier.pt (resumes last.pt)
    quality = check_classifier(config, path)         # QualityGateError below train.classifier.gate
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.eval.classification import ClassifierQuality
from wsss.layout import RunLayout
from wsss.steps.classifier_gate import classifier_quality, enforce_gate
from wsss.steps.run_record import record_settings
from wsss.train import classifier_training
from wsss.train.run_control import RunControl

__all__ = ["train_classifier", "check_classifier"]


def train_classifier(config: Config, control: RunControl = RunControl()) -> Path:
    """Train (or resume) the classifier of ``config`` (``data``, ``model``, ``train.classifier``,
    ``train.device``) into RUN/classifier; records the settings in RUN/config.yaml. Returns
    classifier.pt."""
    record_settings(config)
    return classifier_training.train_classifier(config.data, config.model, config.train.classifier,
                                                config.train.device, RunLayout(config.run_dir).classifier, control)


def check_classifier(config: Config, checkpoint: str | os.PathLike) -> ClassifierQuality | None:
    """The gate of ``train.classifier.gate`` on the validation scores stored with ``checkpoint``:
    prints what it measured, raises QualityGateError below the gate (unless ``gate.force``);
    returns the reading (None: unmeasured)."""
    gate = config.train.classifier.gate
    quality = classifier_quality(checkpoint, gate)
    enforce_gate(quality, gate)
    return quality
