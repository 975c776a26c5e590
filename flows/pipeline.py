"""The ``pipeline`` flow: the whole job, end to end.

    data (the demo set is generated when missing) → train_classifier → pseudo_labels (training
    split) → train_segmenter → evaluate (segmenter, validation split) → stage table and report

Every step resumes: training continues from last.pt, finished pseudo-labels are skipped, so a
re-run after an interruption does only what is left. Writes RUN/report.html and
RUN/report.json (see ``wsss.orchestration.report``).
"""

import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.evaluate import evaluate
from flows.pseudo_labels import pseudo_labels
from flows.training import train_classifier, train_segmenter
from wsss.config import Config
from wsss.data import open_dataset
from wsss.orchestration.report import write_pipeline_report
from wsss.orchestration.segmenter import validation_predictions
from wsss.orchestration.shards import has_masks

ALL_METHODS = ["getam", "attention", "rollout", "relevance", "gradcam"]


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data(config: Config) -> dict:
    """Open (for the demo: generate) the training and validation splits; returns their sizes."""
    train, val = open_dataset(config.data, config.data.train_split), open_dataset(config.data, config.data.val_split)
    print(f"data: {config.data.root}: {len(train)} training and {len(val)} validation images, "
          f"classes {', '.join(train.classes)}")
    return {"train": len(train), "val": len(val), "val_has_masks": has_masks(val)}


@task(name="stage-table-and-report", cache_policy=NO_CACHE)
def stage_table_and_report(config: Config, checkpoint: Path, methods: list[str], segmenter_scores: dict | None,
                           pseudo: dict, timings: dict[str, float]) -> dict:
    """The stage table on the validation split, and RUN/report.html + RUN/report.json."""
    return write_pipeline_report(config, checkpoint, methods, segmenter_scores, pseudo, timings)


@flow(name="pipeline", log_prints=True)
def pipeline(config: Config = Config(), methods: list[str] = ALL_METHODS) -> dict:
    """Run the whole job for ``config``; ``methods``: the map methods of the stage table
    (GETAM first, then the baselines). Returns the report's paths and headline numbers
    (mIoU in percent), the checks, and the seconds the steps took."""
    timings: dict[str, float] = {}

    def timed(name, call, *args, **kwargs):
        started = time.perf_counter()
        result = call(*args, **kwargs)
        timings[name] = time.perf_counter() - started
        return result

    data = timed("data", prepare_data, config)
    classifier = timed("train_classifier", train_classifier, config)
    labels_dir = config.train.segmenter.labels_dir or Path(config.run_dir) / "pseudo_labels"
    pseudo = timed("pseudo_labels", pseudo_labels, config, checkpoint=classifier, out_dir=labels_dir)
    segmenter = timed("train_segmenter", train_segmenter, config)
    segmenter_scores = None
    if data["val_has_masks"]:  # training wrote its predictions of the validation split
        segmenter_scores = timed("evaluate_segmenter", evaluate, config, predictions=validation_predictions(config),
                                 split=config.data.val_split, artifact_key="segmenter-evaluation")
    report = stage_table_and_report(config, classifier, methods, segmenter_scores, pseudo, timings)
    run_dir = Path(config.run_dir)
    return {"report_html": str(run_dir / "report.html"), "report_json": str(run_dir / "report.json"),
            "classifier": str(classifier), "segmenter": str(segmenter),
            "segmenter_mIoU": None if report["segmenter"] is None else report["segmenter"]["mIoU"],
            "pseudo_labels_mIoU": report["pseudo_labels"].get("mIoU"), "checks": report["checks"],
            "seconds": report["timings_s"]["total"]}
