"""The training flows: ``train_classifier`` and ``train_segmenter``.

Both resume an interrupted run of the same config (the training code keeps last.pt) and
return the final checkpoint's path. Run them with a Prefect server to see their logs (one line
per epoch or logged interval) in the UI.
"""

from pathlib import Path

from prefect import flow

from wsss.config import Config
from wsss.orchestration import segmenter as segmenter_calls
from wsss.train import classifier as classifier_training


@flow(name="train-classifier", log_prints=True)
def train_classifier(config: Config = Config(), restart: bool = False) -> Path:
    """Train (or resume) the tag classifier of ``config``; returns RUN/classifier/classifier.pt."""
    return classifier_training.train_classifier(config, restart=restart, progress=False)


@flow(name="train-segmenter", log_prints=True)
def train_segmenter(config: Config = Config(), restart: bool = False) -> Path:
    """Train (or resume) the segmenter of ``config`` (``train.segmenter.mode``: single stage,
    or two stage on RUN/pseudo_labels); returns its segmenter.pt."""
    return segmenter_calls.train(config, restart=restart)
