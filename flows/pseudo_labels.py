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

Every image is claimed before it is labelled (OUT/.claims, ``wsss.steps.image_claims``), so two
flow runs on one folder share it (``flows.shard_passes``: the images another live run holds are
left to it and waited for at the end) and a shard that Dask runs again after losing its worker
takes over the lost worker's claims: the log names the worker and the shard redone
(``flows.shard_events``; with Dask also the scheduler's own record of the lost worker).
"""

import os
import socket
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.evaluation import evaluation_artifact
from flows.shard_events import lost_dask_workers, worker_address
from flows.shard_passes import ShardPasses
from flows.task_runners import WhenShardLabelled, make_task_runner, retry_on_io_error
from wsss.config import Config
from wsss.data import open_dataset
from wsss.layout import RunLayout
from wsss.report.artifact_content import examples_markdown
from wsss.steps.image_claims import Claimant
from wsss.steps.label_plan import LabelJob, plan_shards, reconcile_manifest
from wsss.steps.labels_step import finish_labels, label_ids, open_labels


@task(name="label-shard", cache_policy=WhenShardLabelled(), retry_condition_fn=retry_on_io_error, persist_result=True)
def label_shard(job: LabelJob, shard: list[list], run: str | None = None, wait: bool = False) -> dict:
    """Label the images of ``shard`` ([id, fingerprint] pairs) that have no label in the job's
    folder yet, each under a claim held as ``run`` (the flow run in words) on this worker;
    returns ``label_ids``' counts ({ok, skipped, failed}, ``loads``: 1 when this task loaded the
    classifier; busy / others / taken_over when it met other holders' claims) and "where" it
    ran. wait: wait for the images another run holds (else they are left to it)."""
    here = worker_address()
    result = label_ids(job, [image_id for image_id, _ in shard], claimant=Claimant(run=run, worker=here), wait=wait)
    return {**result, "where": here or f"process {os.getpid()} on host {socket.gethostname()}"}


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
    Returns a summary: total, ok, skipped, failed, by_other_runs (labelled meanwhile by another
    run on the same folder), model_loads, seconds, images_per_s, mIoU.
    Two runs on one folder share the work: each image is claimed before it is labelled
    (OUT/.claims, ``wsss.steps.image_claims``); a run leaves the images another live run holds
    to it, waits for them at its end, and takes over those whose holder is gone (a lost worker,
    a killed run), naming the holder and the shard in its log.
    """
    run = RunLayout(config.run_dir)
    out = Path(out_dir or run.pseudo_labels)
    job, note = open_labels(config, Path(checkpoint or run.classifier.final), split or config.data.train_split, out,
                            save_maps=save_maps, maps_dir=maps_dir, strict_source=strict_source)
    if note:
        get_run_logger().warning(f"{note}; earlier labels are kept, new ones use the current settings")
    return _label_shards(job, ids)


def _this_run() -> str:
    """This flow run in words, as claims name their holder: "flow run 'name' (id)"."""
    from prefect.runtime import flow_run

    return f"flow run {flow_run.name!r} ({flow_run.id})"


def _label_shards(job: LabelJob, ids: list[str] | None) -> dict:
    """Map ``label_shard`` over the shards of ``ids`` (None: all of the job's split), then the summary."""
    config = job.config
    dataset = open_dataset(config.data, job.split)
    ids = list(dataset.ids) if ids is None else ids
    unknown = sorted(set(ids) - set(dataset.ids))
    if unknown:
        raise ValueError(f"ids not in {config.data.root} (split {job.split}): {unknown[:5]}")
    plan = plan_shards(dataset, ids, job.out, config.flow.shard_size)
    run = _this_run()
    recovered = reconcile_manifest(job.out, plan.done, Claimant(run=run), config.flow.claim_timeout_s)
    print(f"{plan.total} images: {len(plan.done)} already labelled in {job.out}, {plan.total - len(plan.done)} to "
          f"label; {len(plan.shards)} shard(s) on {config.flow.task_runner}"
          + (f" ({recovered} recorded from disk)" if recovered else ""))

    started = time.perf_counter()
    passes = ShardPasses(plan, job.out, run)
    shard_task = label_shard.with_options(retries=config.flow.retries,
                                          retry_delay_seconds=config.flow.retry_delay_seconds)
    with make_task_runner(config.flow) as runner:
        first = list(enumerate(plan.shards, 1))
        passes.run(runner, shard_task, {"job": job}, first, wait=False)
        passes.run(runner, shard_task.with_options(cache_policy=NO_CACHE), {"job": job}, passes.deferred(),
                   wait=True)  # the images other runs held: never from the cache
        for line in lost_dask_workers(runner, passes.dask_names):
            get_run_logger().warning(line)
    totals, errors = passes.totals, passes.errors
    seconds = time.perf_counter() - started
    if errors:
        message = f"{len(errors)} of {len(plan.shards)} shard(s) failed; first error: {errors[0]!r}"
        raise RuntimeError(message) from errors[0]
    print(f"pseudo-labels: {totals['ok']} written"
          + (f" ({totals['redone']} of them redone: their image, tags or class list changed)" if totals["redone"] else "")
          + f", {totals['skipped']} already there, {totals['failed']} failed, "
          + (f"{totals['by_other_runs']} labelled by another run meanwhile, " if totals["by_other_runs"] else "")
          + f"{round(seconds, 2)} s, model loaded {totals['loads']} time(s)")
    summary = finish_labels(job, ids, totals)
    summary.update(by_other_runs=totals["by_other_runs"], model_loads=totals["loads"], seconds=round(seconds, 2),
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
