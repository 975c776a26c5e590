"""The ``pipeline`` flow: the whole job, end to end.

    data (the demo set is generated when missing) → train_classifier → the quality gate (a
    classifier near chance stops the run here, ``train.classifier.gate``) → [self_training, when
    ``refine.saliency.source`` is ``segmenter``: the saliency maps] → pseudo_labels (training
    split) → train_segmenter (its backbone from this run's classifier when
    ``train.segmenter.init`` says ``classifier``) → the segmenter scored once on the validation
    split → stage table and report

Every step resumes: training continues from last.pt, finished pseudo-labels are skipped, so a
re-run after an interruption does only what is left. Writes RUN/report.html and
RUN/report.json (``wsss.report.build``).
"""

import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.pseudo_labels import pseudo_labels
from flows.self_training import self_training
from flows.training import train_classifier, train_segmenter
from wsss.attention.views import describe_views
from wsss.config import Config, config_to_yaml
from wsss.files import write_text
from wsss.data import open_dataset
from wsss.layout import RunLayout
from wsss.eval.classification import ClassifierQuality
from wsss.report.artifact_content import evaluation_rows
from wsss.steps.classifier_gate import classifier_quality, enforce_gate
from wsss.steps.report_step import stage_table_report
from wsss.steps.segmenter_step import backbone_init, labels_dir, score_segmenter
from wsss.steps.self_training_saliency import describe_saliency, saliency_config
from wsss.steps.label_plan import has_masks
from wsss.eval.review import review_queue
from wsss.report.build import ReviewPage, SegmenterResult

ALL_METHODS = ["getam", "attention", "rollout", "relevance", "gradcam"]


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(config: Config) -> dict:
    """Open (for the demo: generate) the training and validation splits; returns their sizes."""
    train, val = open_dataset(config.data, config.data.train_split), open_dataset(config.data, config.data.val_split)
    print(f"data: {config.data.root}: {len(train)} training and {len(val)} validation images, "
          f"classes {', '.join(train.classes)}")
    return {"train": len(train), "val": len(val), "val_has_masks": has_masks(val)}


@task(name="classifier-quality-gate", cache_policy=NO_CACHE)
def quality_gate(config: Config, checkpoint: Path) -> ClassifierQuality | None:
    """Stop the run here, before any pseudo-label, when the classifier is near chance."""
    gate = config.train.classifier.gate
    quality = classifier_quality(checkpoint, gate)
    enforce_gate(quality, gate)
    if quality is not None:
        create_table_artifact(
            table=[{"class": name, "AP": round(ap, 3) if ap == ap else None, "prevalence": round(p, 3),
                    "skill": None if k != k else round(k, 2), "told apart": name not in quality.weak}
                   for name, ap, p, k in zip(quality.classes, quality.ap, quality.prevalence, quality.skill)],
            key="classifier-quality", description=quality.summary())
    return quality


@task(name="evaluate-segmenter", cache_policy=NO_CACHE)
def evaluate_segmenter(config: Config, checkpoint: Path) -> SegmenterResult | None:
    """The segmenter scored once on the validation split, and its table artifact."""
    run = RunLayout(config.run_dir)
    mode = config.train.segmenter.mode
    result = score_segmenter(checkpoint, config.data, config.predict, config.cam, config.refine, mode,
                             config.train.device, run.segmenter(mode), progress=False)
    if result is not None:
        scores = {**result.scores.final().to_dict(result.classes), "images": result.images}
        create_table_artifact(table=evaluation_rows(scores), key="segmenter-evaluation",
                              description=f"segmenter ({mode}) on {config.data.root} ({config.data.val_split}): "
                                          f"mIoU {100 * scores['mIoU']:.1f} %")
    return result


@task(name="stage-table-and-report", cache_policy=NO_CACHE)
def stage_table_and_report(config: Config, checkpoint: Path, methods: list[str], segmenter: SegmenterResult | None,
                           pseudo: dict, timings: dict[str, float], classifier: ClassifierQuality | None) -> dict:
    """The stage table on the validation split, and RUN/report.html + RUN/report.json
    (``config`` as the user gave it: self-training's saliency folder is set here)."""
    run, data = RunLayout(config.run_dir), config.data
    notes = [f"data set: {data.root} ({data.format}); stage table and segmenter on split {data.val_split}, "
             f"pseudo-labels on split {data.train_split}",
             f"classifier: {checkpoint}; {describe_views(config.cam)}; saliency: {describe_saliency(config)}; "
             f"CRF in the pseudo-labels: {config.refine.crf.enabled}",
             "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())]
    labelling = saliency_config(config)
    review = None
    labels = labels_dir(config.train.segmenter, run) or run.pseudo_labels
    if config.report.review_images and labels.is_dir():
        train = open_dataset(labelling.data, data.train_split)
        maps = next((m for m in (labels / "maps", run.self_training.pseudo_labels / "maps") if m.is_dir()), None)
        review = ReviewPage(review_queue(labels, train, count=config.report.review_images), train, labels, maps,
                            run.review_html)
    return stage_table_report(checkpoint, open_dataset(labelling.data, data.val_split), config.cam, labelling.refine,
                              methods,
                              config.train.device, run.report_json, run.report_html,
                              "wsss pipeline: pseudo-label stages and segmenter", notes,
                              stage_images=config.report.stage_images, segmenter=segmenter, pseudo=pseudo,
                              timings=timings, config=config.model_dump(mode="json"), classifier=classifier,
                              review=review,
                              segmenter_predictions=run.segmenter(config.train.segmenter.mode).val_predictions)


@flow(name="pipeline", log_prints=True)
def pipeline(config: Config = Config(), methods: list[str] = ALL_METHODS) -> dict:
    """Run the whole job for ``config``; ``methods``: the map methods of the stage table
    (GETAM first, then the baselines). Returns the report's paths and headline numbers
    (mIoU in percent), the checks, and the seconds the steps took."""
    run = RunLayout(config.run_dir)
    timings: dict[str, float] = {}

    def timed(name, call, *args, **kwargs):
        started = time.perf_counter()
        result = call(*args, **kwargs)
        timings[name] = time.perf_counter() - started
        return result

    write_text(run.config, config_to_yaml(config))  # what `--checkpoint RUN/...` without --config uses
    data = timed("data", prepare_data, config)
    classifier = timed("train_classifier", train_classifier, config)
    quality = quality_gate(config, classifier)  # raises (the run stops) when the classifier is near chance
    saved_maps = None
    if config.refine.saliency.source == "segmenter":
        timed("self_training", self_training, config, checkpoint=classifier)
        saved_maps = run.self_training.pseudo_labels / "maps"  # the second round reuses the first round's maps
    labelling = saliency_config(config)  # self-training: its maps as the saliency folder from here on
    settings = config.train.segmenter
    pseudo = timed("pseudo_labels", pseudo_labels, labelling, checkpoint=classifier,
                   out_dir=labels_dir(settings, run) or run.pseudo_labels, maps_dir=saved_maps)
    init = classifier if settings.init == "classifier" else backbone_init(settings.init, run)  # the one just trained
    segmenter = timed("train_segmenter", train_segmenter, labelling, init=init)
    scored = timed("evaluate_segmenter", evaluate_segmenter, labelling, segmenter) if data["val_has_masks"] else None
    report = stage_table_and_report(config, classifier, methods, scored, pseudo, timings, quality)
    return {"report_html": str(run.report_html), "report_json": str(run.report_json),
            "classifier": str(classifier), "segmenter": str(segmenter),
            "segmenter_mIoU": None if report["segmenter"] is None else report["segmenter"]["mIoU"],
            "pseudo_labels_mIoU": report["pseudo_labels"].get("mIoU"), "checks": report["checks"],
            "seconds": report["timings_s"]["total"]}
