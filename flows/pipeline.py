"""The ``pipeline`` flow: the whole job, end to end.

    data (the demo set is generated when missing) → train_classifier → the quality gate (a
    classifier near chance stops the run here, ``train.classifier.gate``) → [self_training, when
    ``refine.saliency.source`` is ``segmenter``: the saliency maps] → pseudo_labels (training
    split) → train_segmenter (its backbone from this run's classifier when
    ``train.segmenter.init`` says ``classifier``) → the segmenter scored once on the validation
    split → stage table and report

Every step resumes: training continues from last.pt, finished pseudo-labels are skipped, so a
re-run after an interruption does only what is left. Writes RUN/report.html and
RUN/report.json (``wsss.report.build``). Each task calls one step entry of ``wsss.steps``.
"""

import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.evaluation import evaluation_artifact
from flows.pseudo_labels import pseudo_labels
from flows.self_training import self_training
from flows.training import train_classifier, train_segmenter
from wsss.config import Config
from wsss.data import open_dataset
from wsss.eval.classification import ClassifierQuality
from wsss.layout import RunLayout
from wsss.report.build import RunResults, SegmenterResult
from wsss.steps.classifier_step import check_classifier
from wsss.steps.label_plan import has_masks
from wsss.steps.report_step import pipeline_report
from wsss.steps.run_record import record_settings
from wsss.steps.segmenter_inputs import labels_dir
from wsss.steps.segmenter_step import score_segmenter

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
    quality = check_classifier(config, checkpoint)
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
    result = score_segmenter(config, checkpoint, progress=False)
    if result is not None:
        scores = {**result.scores.final().to_dict(result.classes), "images": result.images}
        evaluation_artifact(scores, "segmenter-evaluation",
                            f"segmenter ({result.mode}) on {config.data.root} ({config.data.val_split})")
    return result


@task(name="stage-table-and-report", cache_policy=NO_CACHE)
def stage_table_and_report(config: Config, checkpoint: Path, methods: list[str], results: RunResults) -> dict:
    """The stage table on the validation split, and RUN/report.html + RUN/report.json."""
    return pipeline_report(config, checkpoint, methods, results)


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

    record_settings(config)  # what `--checkpoint RUN/...` without --config uses
    data = timed("data", prepare_data, config)
    classifier = timed("train_classifier", train_classifier, config)
    quality = quality_gate(config, classifier)  # raises (the run stops) when the classifier is near chance
    saved_maps = None
    if config.refine.saliency.source == "segmenter":
        timed("self_training", self_training, config, checkpoint=classifier)
        saved_maps = run.self_training.pseudo_labels / "maps"  # the second round reuses the first round's maps
    pseudo = timed("pseudo_labels", pseudo_labels, config, checkpoint=classifier,
                   out_dir=labels_dir(config.train.segmenter, run) or run.pseudo_labels, maps_dir=saved_maps)
    segmenter = timed("train_segmenter", train_segmenter, config)
    scored = timed("evaluate_segmenter", evaluate_segmenter, config, segmenter) if data["val_has_masks"] else None
    report = stage_table_and_report(config, classifier, methods, RunResults(scored, pseudo, timings, quality))
    return {"report_html": str(run.report_html), "report_json": str(run.report_json),
            "classifier": str(classifier), "segmenter": str(segmenter),
            "segmenter_mIoU": None if report["segmenter"] is None else report["segmenter"]["mIoU"],
            "pseudo_labels_mIoU": report["pseudo_labels"].get("mIoU"), "checks": report["checks"],
            "seconds": report["timings_s"]["total"]}
