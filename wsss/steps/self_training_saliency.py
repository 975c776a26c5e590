"""Self-training's saliency (``refine.saliency.source: segmenter``) as the rest of a run sees it.

The ``self-training`` flow (flows/self_training.py) writes a first-round segmenter's
foreground maps to RUN/self_training/saliency; every later step labels with them as a
saliency folder. ``saliency_config`` turns a config into that folder config, so the flows and
the command line read the same maps the same way.
"""

from __future__ import annotations

from wsss.config import Config
from wsss.layout import RunLayout

__all__ = ["saliency_config", "describe_saliency"]


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
