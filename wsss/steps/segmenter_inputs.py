"""What a segmenter run starts from: the classifier.pt of its backbone and, two stage, the folder
of pseudo-labels it learns from (``train.segmenter.init``, ``train.segmenter.labels_dir``)."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import SegmenterTrainConfig
from wsss.layout import RunLayout

__all__ = ["backbone_init", "labels_dir"]


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
