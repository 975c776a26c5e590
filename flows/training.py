"""The training flows: ``train_classifier`` and ``train_segmenter``.

Both resume an interrupted run of the same config (the training code keeps last.pt) and
return the final checkpoint's path. In the Prefect UI: a progress artifact kept current
(``classifier-training-progress`` per epoch, ``segmenter-training-progress`` every
``train.segmenter.log_every`` steps) and a log line at the same times with the counts, the rate
(images/s, steps/s) and the time left (``flows.progress_artifacts``).
"""

from pathlib import Path

from prefect import flow

from wsss.config import Config
from wsss.layout import RunLayout
from flows.progress_artifacts import ArtifactProgress
from wsss.steps.segmenter_step import backbone_init, labels_dir
from wsss.train import classifier_training
from wsss.train import segmenter_training


@flow(name="train-classifier", log_prints=True)
def train_classifier(config: Config = Config(), restart: bool = False) -> Path:
    """Train (or resume) the tag classifier of ``config``; returns RUN/classifier/classifier.pt."""
    files = RunLayout(config.run_dir).classifier
    progress = ArtifactProgress("classifier-training-progress", f"classifier training in {files.folder}")
    return classifier_training.train_classifier(config.data, config.model, config.train.classifier,
                                                config.train.device, files, restart=restart, progress=False,
                                                on_progress=progress)


@flow(name="train-segmenter", log_prints=True)
def train_segmenter(config: Config = Config(), restart: bool = False, init: Path | None = None) -> Path:
    """Train (or resume) the segmenter of ``config`` (``train.segmenter.mode``: single stage,
    or two stage on the pseudo-labels); returns its segmenter.pt. init: the classifier.pt that
    starts the backbone (None: as ``train.segmenter.init`` says)."""
    run, settings = RunLayout(config.run_dir), config.train.segmenter
    files = run.segmenter(settings.mode)
    progress = ArtifactProgress("segmenter-training-progress",
                                f"segmenter training ({settings.mode}) in {files.folder}")
    return Path(segmenter_training.train_segmenter(
        config.data, config.model, settings, config.cam, config.refine, config.train.device,
        files, init=init or backbone_init(settings.init, run),
        labels_dir=labels_dir(settings, run), restart=restart, progress=False, on_progress=progress))
