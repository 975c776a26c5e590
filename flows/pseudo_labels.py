"""The ``pseudo_labels`` flow: the pseudo-label chain over a data set, one task per shard.

    OUT/<id>.png          pseudo-labels (as ``wsss pseudo-label`` writes them)
    OUT/manifest.jsonl    every image's outcome: ok, or failed with its reason
    OUT/source.json       checkpoint digest and settings that made the labels
    OUT/evaluation.json   scores against the masks, when the data set has them

The flow lists the data set, cuts it into shards of ``flow.shard_size`` images and maps
``label_shard`` over them on the task runner of ``flow.task_runner``. What is finished is read
from disk: a task labels only its images without a PNG, and loads nothing when there are none.
Each worker loads the classifier once (``wsss.steps.worker_cache``). A shard whose images
are all labelled is cached by its inputs (settings, checkpoint digest, image ids with their
file fingerprints) plus the task's source; an incomplete one always runs. Artifacts: progress
while it runs, the evaluation table when ground truth exists, and example overlays. Each
finished shard logs a line: images so far, ok / failed / skipped, images/s and time left.
"""

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed

from flows.evaluation import evaluate
from wsss.config import Config
from wsss.data import open_dataset
from wsss.data.dataset_walk import MANIFEST
from wsss.eval.evaluate import label_shares
from wsss.layout import RunLayout
from wsss.lifetime import hold_folder
from wsss.report.artifact_content import examples_markdown
from flows.progress_artifacts import ArtifactProgress, shard_line
from flows.task_runners import WhenShardLabelled, make_task_runner, retry_on_io_error
from wsss.steps.provenance import claim_output_dir, label_source
from wsss.steps.label_plan import (
    failure_reasons, has_masks, plan_shards, reconcile_manifest, remove_stale_temporaries, unlabelled,
)
from wsss.steps.worker_cache import checkpoint_digest, worker_labeler
from wsss.progress import RateMeter


@task(name="label-shard", cache_policy=WhenShardLabelled(), retry_condition_fn=retry_on_io_error, persist_result=True)
def label_shard(config: Config, split: str | None, shard: list[list], out_dir: Path, checkpoint: Path,
                digest: str, save_maps: bool = False, maps_dir: Path | None = None) -> dict:
    """Label the images of ``shard`` ([id, fingerprint] pairs) that have no label in ``out_dir``
    yet; returns the counts {ok, skipped, failed} and ``loads`` (1 when this task loaded the
    classifier). save_maps: also write OUT/maps/<id>.npz; maps_dir: label from the maps saved
    there instead of computing them."""
    from wsss.writers.label_pngs import write_pseudo_labels

    todo = unlabelled(shard, out_dir)
    if not todo:
        return {"ok": 0, "skipped": len(shard), "failed": 0, "loads": 0}
    worker = worker_labeler(config.data, split, config.cam, config.refine, config.train.device, checkpoint, digest,
                            torch_threads=config.flow.torch_threads, maps_dir=maps_dir)
    counts = write_pseudo_labels(worker.labeler, worker.dataset, out_dir, batch_size=config.cam.batch_size, ids=todo,
                                 save_maps=save_maps, progress=False)
    return {**counts, "loads": int(worker.loaded)}


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
        return _label_folder(config, Path(checkpoint or run.classifier.final), split or config.data.train_split, out,
                             ids, strict_source, save_maps, maps_dir)


def _label_folder(config: Config, checkpoint: Path, split: str, out: Path, ids: list[str] | None, strict_source: bool,
                  save_maps: bool, maps_dir: Path | None) -> dict:
    """The body of ``pseudo_labels`` (its folder held)."""
    logger = get_run_logger()
    digest = checkpoint_digest(checkpoint)
    dataset = open_dataset(config.data, split)
    if ids is None:
        ids = list(dataset.ids)
    unknown = sorted(set(ids) - set(dataset.ids))
    if unknown:
        raise ValueError(f"ids not in {config.data.root} (split {split}): {unknown[:5]}")
    note = claim_output_dir(out, label_source(config.cam, config.refine, config.data, digest), strict=strict_source)
    if note:
        logger.warning(f"{note}; earlier labels are kept, new ones use the current settings")
    removed = remove_stale_temporaries(out)
    if removed:
        logger.info(f"removed {removed} half-written label file(s) of an interrupted run")
    plan = plan_shards(dataset, ids, out, config.flow.shard_size)
    recovered = reconcile_manifest(out, plan.done)
    print(f"{plan.total} images: {len(plan.done)} already labelled in {out}, {plan.total - len(plan.done)} to label; "
          f"{len(plan.shards)} shard(s) on {config.flow.task_runner}"
          + (f" ({recovered} recorded from disk)" if recovered else ""))

    started = time.perf_counter()
    totals = {"ok": 0, "skipped": len(plan.done), "failed": 0, "loads": 0}
    finished = shards_done = labelled = 0  # images of finished shards; shards; their images labelled in this run
    meter = RateMeter(plan.total - len(plan.done))
    progress = ArtifactProgress("pseudo-labels-progress", f"pseudo-labels in {out}")
    errors = []
    shard_task = label_shard.with_options(retries=config.flow.retries,
                                          retry_delay_seconds=config.flow.retry_delay_seconds)
    with make_task_runner(config.flow) as runner:
        futures = {runner.submit(shard_task, {"config": config, "split": split, "shard": shard, "out_dir": out,
                                              "checkpoint": checkpoint, "digest": digest,
                                              "save_maps": save_maps, "maps_dir": maps_dir}): shard
                   for shard in plan.shards}
        for future in as_completed(list(futures)):
            shard = futures[future]
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                errors.append(result)
            elif plan.pending(shard):  # a shard finished before this run counts as skipped (cached or not)
                for key in ("ok", "failed", "loads"):
                    totals[key] += result[key]
            finished, shards_done, labelled = finished + len(shard), shards_done + 1, labelled + plan.pending(shard)
            rate, left = meter.read(labelled)
            line = shard_line("pseudo-labels", shards_done, len(plan.shards), finished, plan.total,
                              {**{k: totals[k] for k in ("ok", "failed", "skipped")},
                               **({"errors": len(errors)} if errors else {})}, rate, left)
            progress(finished, plan.total, {"line": line})
    seconds = time.perf_counter() - started

    summary = {"out_dir": str(out), "total": plan.total, **{k: totals[k] for k in ("ok", "skipped", "failed")},
               "model_loads": totals["loads"], "seconds": round(seconds, 2),
               "images_per_s": round(totals["ok"] / seconds, 2) if totals["ok"] and seconds > 0 else None}
    if totals["failed"]:
        reasons = failure_reasons(out, ids)
        logger.warning(f"{totals['failed']} image(s) failed (see {out / MANIFEST}), e.g. " + "; ".join(reasons[:3]))
    if errors:
        message = f"{len(errors)} of {len(plan.shards)} shard(s) failed; first error: {errors[0]!r}"
        raise RuntimeError(message) from errors[0]
    print(f"pseudo-labels: {summary['ok']} written, {summary['skipped']} already there, {summary['failed']} failed, "
          f"{summary['seconds']} s, model loaded {summary['model_loads']} time(s)")

    summary["label_shares"] = {k: v if k == "images" else round(float(v), 4) for k, v in label_shares(out, ids).items()}
    shares = summary["label_shares"]
    print(f"labels cover: {100 * shares['foreground']:.1f} % classes, {100 * shares['background']:.1f} % background, "
          f"{100 * shares['ignore']:.1f} % ignore ({shares['images']} images)")
    if not has_masks(dataset):
        print("no masks in the data set: the quality of these pseudo-labels is unmeasured")
    if has_masks(dataset) and ids == list(dataset.ids):
        summary["mIoU"] = evaluate(out, config, split=split, artifact_key="pseudo-labels-evaluation")["mIoU"]
    labelled = [i for i in ids if (out / f"{i}.png").is_file()][:config.flow.examples]
    if config.flow.examples:
        create_markdown_artifact(examples_markdown(dataset, out, labelled, f"Pseudo-labels: {len(labelled)} examples"),
                                 key="pseudo-labels-examples", description=f"example overlays from {out}")
    return summary
