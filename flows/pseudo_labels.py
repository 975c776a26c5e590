"""The ``pseudo_labels`` flow: the pseudo-label step over a data set, one task per shard.

    OUT/<id>.png          pseudo-labels (as ``wsss pseudo-label`` writes them)
    OUT/manifest.jsonl    every image's outcome: ok, or failed with its reason
    OUT/source.json       checkpoint digest and settings that made the labels
    OUT/evaluation.json   scores against the masks, when the data set has them

The flow opens the label folder (``wsss.steps.labels_step.open_labels``), cuts the ids into
shards of ``flow.shard_size`` images and maps ``label_shard`` (``label_ids`` of the step) over
them on the task runner of ``flow.task_runner``, then summarises (``finish_labels``). What is
finished is read from disk: a task labels only its images without a PNG, and loads nothing
when there are none. Each worker loads the classifier once (``wsss.steps.worker_cache``). A
shard whose images are all labelled is cached by its inputs (the job: settings, checkpoint
digest; the image ids with their file fingerprints) plus the task's source; an incomplete one
always runs. Artifacts: progress while it runs, the evaluation table when ground truth exists,
and example overlays. Each finished shard logs a line: images so far, ok / failed / skipped,
images/s and time left.
"""

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed

from flows.evaluation import evaluation_artifact
from flows.progress_artifacts import ArtifactProgress, shard_line
from flows.task_runners import WhenShardLabelled, make_task_runner, retry_on_io_error
from wsss.config import Config
from wsss.data import open_dataset
from wsss.layout import RunLayout
from wsss.lifetime import hold_folder
from wsss.progress import RateMeter
from wsss.report.artifact_content import examples_markdown
from wsss.steps.label_plan import LabelJob, plan_shards, reconcile_manifest
from wsss.steps.labels_step import finish_labels, label_ids, open_labels


@task(name="label-shard", cache_policy=WhenShardLabelled(), retry_condition_fn=retry_on_io_error, persist_result=True)
def label_shard(job: LabelJob, shard: list[list]) -> dict:
    """Label the images of ``shard`` ([id, fingerprint] pairs) that have no label in the job's
    folder yet; returns the counts {ok, skipped, failed} and ``loads`` (1 when this task loaded
    the classifier)."""
    return label_ids(job, [image_id for image_id, _ in shard])


@flow(name="pseudo-labels", log_prints=True)
def pseudo_labels(config: Config = Config(), checkpoint: Path | None = None, split: str | None = None,
                  out_dir: Path | None = None, ids: list[str] | None = None, strict_source: bool = True,
                  save_maps: bool = False, maps_dir: Path | None = None) -> dict:
    """Write pseudo-labels for ``config.data`` (``split``; None: the training split).

    checkpoint: classifier.pt (None: RUN/classifier/classifier.pt); out_dir: None for
    RUN/pseudo_labels; ids: only these images (None: all of the split); strict_source: refuse a
    folder labelled with another checkpoint or settings (False: keep its labels, go on);
    save_maps: also write the refined maps, OUT/maps/<id>.npz; maps_dir: make the labels from
    the refined maps saved there (the rule and CRF only: self-training's second round).
    Returns a summary: total, ok, skipped, failed, model_loads, seconds, images_per_s, mIoU.
    A second run on the same folder is refused while this one holds it (``wsss.lifetime``).
    """
    run = RunLayout(config.run_dir)
    out = Path(out_dir or run.pseudo_labels)
    with hold_folder(out):
        job, note = open_labels(config, Path(checkpoint or run.classifier.final), split or config.data.train_split, out,
                                save_maps=save_maps, maps_dir=maps_dir, strict_source=strict_source)
        if note:
            get_run_logger().warning(f"{note}; earlier labels are kept, new ones use the current settings")
        return _label_shards(job, ids)


def _label_shards(job: LabelJob, ids: list[str] | None) -> dict:
    """Map ``label_shard`` over the shards of ``ids`` (None: all of the job's split), then the summary."""
    config = job.config
    dataset = open_dataset(config.data, job.split)
    ids = list(dataset.ids) if ids is None else ids
    unknown = sorted(set(ids) - set(dataset.ids))
    if unknown:
        raise ValueError(f"ids not in {config.data.root} (split {job.split}): {unknown[:5]}")
    plan = plan_shards(dataset, ids, job.out, config.flow.shard_size)
    recovered = reconcile_manifest(job.out, plan.done)
    print(f"{plan.total} images: {len(plan.done)} already labelled in {job.out}, {plan.total - len(plan.done)} to "
          f"label; {len(plan.shards)} shard(s) on {config.flow.task_runner}"
          + (f" ({recovered} recorded from disk)" if recovered else ""))

    started = time.perf_counter()
    totals = {"ok": 0, "skipped": len(plan.done), "failed": 0, "loads": 0, "redone": 0}
    finished = shards_done = labelled = 0  # images of finished shards; shards; their images labelled in this run
    meter = RateMeter(plan.total - len(plan.done))
    progress = ArtifactProgress("pseudo-labels-progress", f"pseudo-labels in {job.out}")
    errors = []
    shard_task = label_shard.with_options(retries=config.flow.retries,
                                          retry_delay_seconds=config.flow.retry_delay_seconds)
    with make_task_runner(config.flow) as runner:
        futures = {runner.submit(shard_task, {"job": job, "shard": shard}): shard for shard in plan.shards}
        for future in as_completed(list(futures)):
            shard = futures[future]
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                errors.append(result)
            elif plan.pending(shard):  # a shard finished before this run counts as skipped (cached or not)
                for key in ("ok", "failed", "loads", "redone"):
                    totals[key] += result.get(key, 0)
            finished, shards_done, labelled = finished + len(shard), shards_done + 1, labelled + plan.pending(shard)
            rate, left = meter.read(labelled)
            line = shard_line("pseudo-labels", shards_done, len(plan.shards), finished, plan.total,
                              {**{k: totals[k] for k in ("ok", "failed", "skipped")},
                               **({"errors": len(errors)} if errors else {})}, rate, left)
            progress(finished, plan.total, {"line": line})
    seconds = time.perf_counter() - started
    if errors:
        message = f"{len(errors)} of {len(plan.shards)} shard(s) failed; first error: {errors[0]!r}"
        raise RuntimeError(message) from errors[0]
    print(f"pseudo-labels: {totals['ok']} written"
          + (f" ({totals['redone']} of them redone: their image, tags or class list changed)" if totals["redone"] else "")
          + f", {totals['skipped']} already there, {totals['failed']} failed, "
          f"{round(seconds, 2)} s, model loaded {totals['loads']} time(s)")
    summary = finish_labels(job, ids, totals)
    summary.update(model_loads=totals["loads"], seconds=round(seconds, 2),
                   images_per_s=round(totals["ok"] / seconds, 2) if totals["ok"] and seconds > 0 else None)
    scores = summary.pop("scores", None)
    if scores is not None:
        evaluation_artifact(scores, "pseudo-labels-evaluation",
                            f"{job.out} against the masks of {config.data.root} ({job.split}), {scores['images']} images")
    labelled_ids = [i for i in ids if (job.out / f"{i}.png").is_file()][:config.flow.examples]
    if config.flow.examples:
        create_markdown_artifact(examples_markdown(dataset, job.out, labelled_ids,
                                                   f"Pseudo-labels: {len(labelled_ids)} examples"),
                                 key="pseudo-labels-examples", description=f"example overlays from {job.out}")
    return summary
