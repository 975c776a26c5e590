"""Where a run keeps its files: one type names every file of a run folder.

    run = RunLayout(config.run_dir)
    run.config                    RUN/config.yaml (the run's settings)
    run.classifier.final          RUN/classifier/classifier.pt
    run.segmenter("two_stage")    RUN/segmenter_two_stage/ (its files as properties)
    run.pseudo_labels             RUN/pseudo_labels/
    run.self_training.saliency    RUN/self_training/saliency/ (self-training's saliency maps)
    run.report_html               RUN/report.html (and review.html: the review queue)

Nothing else in wsss spells a run's file names; a run folder is self-contained (no setting
names another run's file unless the user sets one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout", "ClassifierFiles", "SegmenterFiles", "SelfTrainingFiles"]


@dataclass(frozen=True)
class ClassifierFiles:
    """RUN/classifier: ``last.pt`` (resumable, every epoch), ``classifier.pt`` (final),
    ``history.json`` (one entry per epoch)."""

    folder: Path

    last = property(lambda self: self.folder / "last.pt")
    final = property(lambda self: self.folder / "classifier.pt")
    history = property(lambda self: self.folder / "history.json")


@dataclass(frozen=True)
class SegmenterFiles:
    """RUN/segmenter (single stage) or RUN/segmenter_two_stage: ``last.pt``, ``segmenter.pt``,
    ``history.json``, ``metrics.json`` (validation scores), ``manifest.jsonl`` (images left
    out, images trained on corrected labels), ``val_predictions/`` (its labels of the validation
    split), ``corrections.json`` and ``corrections/`` (``train.segmenter.corrections``: which images
    were corrected, from what; a COCO JSON's masks as label PNGs)."""

    folder: Path

    last = property(lambda self: self.folder / "last.pt")
    final = property(lambda self: self.folder / "segmenter.pt")
    history = property(lambda self: self.folder / "history.json")
    metrics = property(lambda self: self.folder / "metrics.json")
    manifest = property(lambda self: self.folder / "manifest.jsonl")
    val_predictions = property(lambda self: self.folder / "val_predictions")
    corrections = property(lambda self: self.folder / "corrections")  # a COCO JSON's corrected masks as PNGs
    corrections_record = property(lambda self: self.folder / "corrections.json")  # which images, from what


@dataclass(frozen=True)
class SelfTrainingFiles:
    """RUN/self_training (``refine.saliency.source: segmenter``): ``pseudo_labels/`` (first
    round, no saliency), ``segmenter/`` (the first-round segmenter's files), ``saliency/`` (its
    foreground, 0/255 PNGs for the training and validation images)."""

    folder: Path

    pseudo_labels = property(lambda self: self.folder / "pseudo_labels")
    segmenter = property(lambda self: SegmenterFiles(self.folder / "segmenter"))
    saliency = property(lambda self: self.folder / "saliency")


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (``run_dir`` of the config)."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def classifier(self) -> ClassifierFiles:
        return ClassifierFiles(self.root / "classifier")

    def segmenter(self, mode: str) -> SegmenterFiles:
        """The segmenter folder of a training mode (``single_stage`` or ``two_stage``)."""
        if mode not in ("single_stage", "two_stage"):
            raise ValueError(f"segmenter mode {mode!r}: expected one of single_stage, two_stage")
        return SegmenterFiles(self.root / ("segmenter" if mode == "single_stage" else "segmenter_two_stage"))

    pseudo_labels = property(lambda self: self.root / "pseudo_labels")
    self_training = property(lambda self: SelfTrainingFiles(self.root / "self_training"))
    config = property(lambda self: self.root / "config.yaml")  # the settings of the run (written when it starts)
    report_html = property(lambda self: self.root / "report.html")
    report_json = property(lambda self: self.root / "report.json")
    review_html = property(lambda self: self.root / "review.html")  # the least confident pseudo-labels
    inbox = property(lambda self: self.root / "inbox")
    data = property(lambda self: self.root / "data")
