"""The ``self-training`` flow: the saliency of ``refine.saliency.source: segmenter``.

    round 1: pseudo-labels without saliency (``source: none``)   RUN/self_training/pseudo_labels/
            and their refined maps                              RUN/self_training/pseudo_labels/maps/
          → a two-stage segmenter trained on them (``steps``)     RUN/self_training/segmenter/
          → its foreground probability > ``threshold``            RUN/self_training/saliency/<id>.png
            on the training and the validation images

The steps are ``wsss.steps.self_training_saliency``'s. The rest of the run then labels with
these maps as a saliency folder (``saliency_config``); the pipeline's second round reads the
refined maps saved here instead of computing them again. No ground-truth mask enters any step.
Every step resumes like its own flow (finished labels and maps are kept, the segmenter continues
from its last.pt).
"""

from pathlib import Path

from prefect import flow

from flows.progress_artifacts import ArtifactProgress
from flows.pseudo_labels import pseudo_labels
from wsss.config import Config
from wsss.layout import RunLayout
from wsss.steps.self_training_saliency import round1_config, train_round1_segmenter, write_round1_saliency
from wsss.train.run_control import RunControl


@flow(name="self-training", log_prints=True)
def self_training(config: Config = Config(), checkpoint: Path | None = None) -> dict:
    """Make RUN/self_training/saliency for ``config`` with the classifier ``checkpoint`` (None:
    RUN/classifier/classifier.pt). Returns the first round's label summary, the segmenter's
    path and the counts of maps written per split."""
    files = RunLayout(config.run_dir).self_training
    checkpoint = Path(checkpoint or RunLayout(config.run_dir).classifier.final)
    labels = pseudo_labels(round1_config(config), checkpoint=checkpoint, out_dir=files.pseudo_labels, save_maps=True)
    progress = ArtifactProgress("self-training-segmenter-progress", f"first-round segmenter in {files.segmenter.folder}")
    segmenter = train_round1_segmenter(config, checkpoint, RunControl(progress=False, on_progress=progress))
    written = write_round1_saliency(config, segmenter)
    return {"pseudo_labels": labels, "segmenter": str(segmenter), "saliency": str(files.saliency), "maps": written}
