"""The ``label_inbox`` flow: label what is new in a watched folder, on a schedule.

Each run scans ``flow.inbox.folder`` (see ``wsss.steps.inbox_scan``), labels the ready
images that have no pseudo-label yet, or whose file or tags changed since theirs was made (the
``pseudo_labels`` flow, as a subflow), then, when a segmenter checkpoint exists, predicts the
labelled images that have no prediction yet or whose file changed. Nothing unchanged is labelled
twice; every outcome is appended to the manifests. An image
that failed is tried again only when its file or tags change. Progress: the labelling subflow
logs a line per shard of ``flow.shard_size`` new images (and keeps ``pseudo-labels-progress``
current); the predictions log one per ``flow.shard_size`` images and keep
``inbox-predictions-progress`` current (counts, images/s, time left).

Deploy it with ``serve_inbox(config)`` (``wsss flow serve``, ``make serve``): a cron
(``flow.inbox.cron``) or interval (``flow.inbox.interval_seconds``) schedule, one run at a
time; or through ``prefect.yaml`` and a work pool (docs/flows.md, "On a schedule: the inbox").
"""

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.progress_artifacts import ArtifactProgress
from flows.pseudo_labels import pseudo_labels
from wsss.config import Config
from wsss.data import open_dataset
from wsss.layout import RunLayout
from wsss.steps.inbox_scan import (
    InboxPaths, ensure_classes, inbox_data, predictions_to_make, remember_failures, scan_inbox, unchanged_failures,
)
from wsss.steps.label_plan import image_fingerprint, labels_to_make
from wsss.steps.predict_step import predict_images


@task(name="predict-new", cache_policy=NO_CACHE)
def predict_new(config: Config, paths: InboxPaths, ids: list[str]) -> dict:
    """Segmenter predictions for ``ids`` of the inbox into OUT/predictions; returns the counts
    (a progress artifact and a log line per ``flow.shard_size`` images)."""
    progress = ArtifactProgress("inbox-predictions-progress", f"segmenter predictions in {paths.predictions}")
    return predict_images(config, paths.segmenter, open_dataset(config.data, None), paths.predictions, ids=ids,
                          strict_source=False, on_progress=progress)


@flow(name="label-inbox", log_prints=True)
def label_inbox(config: Config = Config()) -> dict:
    """Label the new images of ``config.flow.inbox.folder``; returns what this run did:
    ready, arriving, missing, untagged (image counts in the inbox), labelled, failed,
    predicted."""
    logger = get_run_logger()
    paths = InboxPaths.of(config.flow.inbox, RunLayout(config.run_dir), config.train.segmenter.mode)
    if not paths.classifier.is_file():
        raise FileNotFoundError(f"no classifier at {paths.classifier}: train one first (make demo, or the "
                                "train_classifier flow) or set flow.inbox.classifier")
    ensure_classes(paths.folder, paths.classifier)
    scan = scan_inbox(paths.folder, config.flow.inbox.settle_seconds)
    summary = {"ready": len(scan.ready), "arriving": len(scan.arriving), "missing": len(scan.missing),
               "untagged": len(scan.untagged), "labelled": 0, "failed": 0, "predicted": 0}
    if scan.arriving or scan.missing or scan.untagged:
        logger.info(f"waiting: {len(scan.arriving)} image(s) still changing, {len(scan.missing)} listed without a "
                    f"file, {len(scan.untagged)} without a row in tags.csv")
    settings = config.model_copy(update={"data": inbox_data(config.flow.inbox)})
    unlabelled = labels_to_make(scan.dataset, scan.ready, paths.labels)  # new, or re-tagged / replaced since
    failed_before = unchanged_failures(scan.dataset, unlabelled, paths.labels)
    new = [i for i in unlabelled if i not in failed_before]
    if failed_before:
        logger.info(f"{len(failed_before)} image(s) failed before and are unchanged: not tried again")
    if new:
        shards = -(-len(new) // config.flow.shard_size)
        logger.info(f"labelling {len(new)} new image(s) in {shards} shard(s) of up to {config.flow.shard_size}")
        fingerprints = {i: image_fingerprint(scan.dataset, i) for i in new}
        result = pseudo_labels(settings, checkpoint=paths.classifier, out_dir=paths.labels, ids=new, strict_source=False)
        remember_failures(fingerprints, paths.labels)
        summary["labelled"], summary["failed"] = result["ok"], result["failed"]
    if paths.segmenter.is_file():
        todo = predictions_to_make(scan.dataset, scan.ready, paths)
        if todo:
            summary["predicted"] = predict_new(settings, paths, todo)["ok"]
    else:
        logger.info(f"no segmenter at {paths.segmenter}: pseudo-labels only")
    print(f"inbox {paths.folder}: {summary['labelled']} labelled, {summary['failed']} failed, "
          f"{summary['predicted']} predicted; {len(scan.ready) - len(unlabelled)} labelled earlier, "
          f"{len(failed_before)} unchanged failure(s)")
    return summary


def serve_inbox(config: Config, name: str = "label-inbox") -> None:
    """Serve ``label_inbox`` with ``config`` on its schedule until interrupted (needs a Prefect
    server: PREFECT_API_URL). At most one run at a time; the schedule is paused on exit."""
    inbox = config.flow.inbox
    if inbox.cron:
        schedule = {"cron": inbox.cron}
    elif inbox.interval_seconds:
        schedule = {"interval": inbox.interval_seconds}
    else:
        raise ValueError("flow.inbox: set cron (e.g. '*/5 * * * *') or interval_seconds to serve on a schedule")
    label_inbox.serve(name=name, parameters={"config": config.model_dump(mode="json")}, limit=1, **schedule)
