"""The ``self-training`` flow: the saliency of ``refine.saliency.source: segmenter``.

    round 1: pseudo-labels without saliency (``source: none``)   RUN/self_training/pseudo_labels/
            and their refined maps                              RUN/self_training/pseudo_labels/maps/
          → a two-stage segmenter trained on them (``steps``)     RUN/self_training/segmenter/
          → its foreground probability > ``threshold``            RUN/self_training/saliency/<id>.png
            on the training and the validation images

The rest of the run then labels with these maps as a saliency folder
(``wsss.steps.self_training_saliency.saliency_config`` gives that config: ``source: folder``,
``data.saliency_dir`` the maps); the pipeline's second round reads the refined maps saved here
instead of computing them again. No ground-truth mask enters any step. Every step resumes like
its own flow (finished labels and maps are kept, the segmenter continues from its last.pt).
"""

from pathlib import Path

from prefect import flow

from flows.pseudo_labels import pseudo_labels
from wsss.config import Config
from wsss.data import open_dataset
from wsss.layout import RunLayout
from wsss.models.checkpoint import load_segmenter, resolve_device
from flows.progress_artifacts import ArtifactProgress
from wsss.steps.segmenter_step import backbone_init
from wsss.predict import Predictor
from wsss.writers.prediction_pngs import write_foreground_maps
from wsss.train import segmenter_training


@flow(name="self-training", log_prints=True)
def self_training(config: Config = Config(), checkpoint: Path | None = None) -> dict:
    """Make RUN/self_training/saliency for ``config`` with the classifier ``checkpoint`` (None:
    RUN/classifier/classifier.pt). Returns the first round's label summary, the segmenter's
    path and the counts of maps written per split."""
    run = RunLayout(config.run_dir)
    files = run.self_training
    settings = config.refine.saliency.self_training
    checkpoint = Path(checkpoint or run.classifier.final)
    round1 = config.model_copy(update={"refine": config.refine.model_copy(update={
        "saliency": config.refine.saliency.model_copy(update={"source": "none"})})})
    labels = pseudo_labels(round1, checkpoint=checkpoint, out_dir=files.pseudo_labels, save_maps=True)
    segmenter_settings = config.train.segmenter.model_copy(update={"mode": "two_stage", "steps": settings.steps})
    print(f"self-training: a first-round segmenter, {settings.steps} steps on {files.pseudo_labels}")
    init = checkpoint if segmenter_settings.init == "classifier" else backbone_init(segmenter_settings.init, run)
    progress = ArtifactProgress("self-training-segmenter-progress",
                                f"first-round segmenter in {files.segmenter.folder}")
    segmenter_path = segmenter_training.train_segmenter(  # its backbone starts as the final segmenter's will
        config.data, config.model, segmenter_settings, config.cam, round1.refine, config.train.device,
        files.segmenter, init=init, labels_dir=files.pseudo_labels, progress=False, on_progress=progress)
    segmenter, _, _ = load_segmenter(segmenter_path, resolve_device(config.train.device))
    predictor = Predictor(segmenter, settings.scales, settings.flip)
    written = {}
    for split in dict.fromkeys(s for s in (config.data.train_split, config.data.val_split) if s is not None):
        written[split] = write_foreground_maps(predictor, open_dataset(config.data, split), files.saliency,
                                               threshold=settings.threshold, batch_size=config.predict.batch_size,
                                               progress=False, crf=config.refine.crf if settings.crf else None)
        print(f"self-training saliency ({split}): {written[split]}")
    return {"pseudo_labels": labels, "segmenter": str(segmenter_path), "saliency": str(files.saliency),
            "maps": written}
