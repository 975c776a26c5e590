"""The training flows: ``train_classifier`` and ``train_segmenter``.

Both resume an interrupted run of the same config (the training code keeps last.pt) and
return the final checkpoint's path. Run them with a Prefect server to see their logs (one line
per epoch or logged interval) in the UI.
"""

from pathlib import Path

from prefect import flow

from wsss.config import Config
from wsss.layout import RunLayout
from wsss.orchestration.segmenter import backbone_init, labels_dir
from wsss.train import classifier as classifier_training
from wsss.train import segmenter as segmenter_training


@flow(name="train-classifier", log_prints=True)
def train_classifier(config: Config = Config(), restart: bool = False) -> Path:
    """Train (or resume) the tag classifier of ``config``; returns RUN/classifier/classifier.pt."""
    return classifier_training.train_classifier(config.data, config.model, config.train.classifier,
                                                config.train.device, RunLayout(config.run_dir).classifier,
                                                restart=restart, progress=False)


@flow(name="train-segmenter", log_prints=True)
def train_segmenter(config: Config = Config(), restart: bool = False, init: Path | None = None) -> Path:
    """Train (or resume) the segmenter of ``config`` (``train.segmenter.mode``: single stage,
    or two stage on the pseudo-labels); returns its segmenter.pt. init: the classifier.pt that
    starts the backbone (None: as ``train.segmenter.init`` says)."""
    run, settings = RunLayout(config.run_dir), config.train.segmenter
    return Path(segmenter_training.train_segmenter(
        config.data, config.model, settings, config.cam, config.refine, config.train.device,
        run.segmenter(settings.mode), init=init or backbone_init(settings.init, run),
        labels_dir=labels_dir(settings, run), restart=restart, progress=False))
