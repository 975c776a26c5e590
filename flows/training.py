"""The training flows: ``train_classifier`` and ``train_segmenter``.

Both resume an interrupted run of the same config (the training code keeps last.pt) and
return the final checkpoint's path. In the Prefect UI: a progress artifact kept current
(``classifier-training-progress`` per epoch, ``segmenter-training-progress`` every
``train.segmenter.log_every`` steps) and a log line at the same times with the counts, the rate
(images/s, steps/s) and the time left (``flows.progress_artifacts``).
"""

from pathlib import Path

from prefect import flow

from flows.progress_artifacts import ArtifactProgress
from wsss.config import Config
from wsss.layout import RunLayout
from wsss.steps import classifier_step, segmenter_step
from wsss.train.run_control import RunControl


@flow(name="train-classifier", log_prints=True)
def train_classifier(config: Config = Config(), restart: bool = False) -> Path:
    """Train (or resume) the tag classifier of ``config``; returns RUN/classifier/classifier.pt."""
    progress = ArtifactProgress("classifier-training-progress",
                                f"classifier training in {RunLayout(config.run_dir).classifier.folder}")
    return classifier_step.train_classifier(config, RunControl(restart=restart, progress=False, on_progress=progress))


@flow(name="train-segmenter", log_prints=True)
def train_segmenter(config: Config = Config(), restart: bool = False, init: Path | None = None) -> Path:
    """Train (or resume) the segmenter of ``config`` (``train.segmenter.mode``: single stage,
    or two stage on the pseudo-labels); returns its segmenter.pt. init: the classifier.pt that
    starts the backbone (None: as ``train.segmenter.init`` says)."""
    mode = config.train.segmenter.mode
    progress = ArtifactProgress("segmenter-training-progress",
                                f"segmenter training ({mode}) in {RunLayout(config.run_dir).segmenter(mode).folder}")
    return Path(segmenter_step.train_segmenter(config, RunControl(restart=restart, progress=False, on_progress=progress),
                                               init=init))
