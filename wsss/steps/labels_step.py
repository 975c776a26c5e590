"""The pseudo-label step: the offline chain over a data set, into a label folder.

    OUT/<id>.png          pseudo-labels (VOC palette: 0 background, 1..C, 255 ignore)
    OUT/maps/<id>.npz     with save_maps: the refined maps (``wsss.data.npz_maps``)
    OUT/manifest.jsonl    every image's outcome: ok (with its confidence), or failed with its reason
    OUT/source.json       checkpoint digest and settings that made the labels (``provenance``)
    OUT/evaluation.json   scores against the masks, when the data set has them

One implementation, in three parts, for the command line (one process) and the flows (shards
on a task runner):

    job, note = open_labels(config, checkpoint, split, out)    # claim the folder, clear half-written files
    counts = label_ids(job, ids)                               # the chain over the ids without a PNG,
                                                               # each image claimed (``image_claims``)
    summary = finish_labels(job, ids, counts)                  # shares of the labels, scores, failures

``pseudo_label(config, checkpoint, split, out)`` is the three in one process (``wsss
pseudo-label``); the ``pseudo-labels`` flow maps ``label_ids`` over shards of ids. What is
finished is read from disk: an image is done when its PNG exists (PNGs are written atomically).
Who writes an image is decided by a claim in OUT/.claims (``wsss.steps.image_claims``): two runs
(or two workers that Dask gave one shard) never label one image at once, and a claim whose
holder died is taken over.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from wsss.config import Config, start_block_problem
from wsss.data import open_dataset
from wsss.data.dataset_walk import MANIFEST
from wsss.eval.label_spread import label_coverage, spreading_classes
from wsss.lifetime import hold_folder
from wsss.models.checkpoint import read_classes, read_depth
from wsss.refine.crf import crf_executor
from wsss.steps.evaluate_step import evaluate_folder
from wsss.steps.image_claims import Claimant, ImageClaims, describe_holder
from wsss.steps.label_plan import (
    LabelJob, failure_reasons, has_masks, labels_to_make, remove_stale_temporaries,
)
from wsss.steps.provenance import claim_output_dir, label_source
from wsss.steps.self_training_saliency import saliency_config
from wsss.steps.worker_cache import checkpoint_digest, worker_dataset, worker_labeler
from wsss.writers.label_pngs import write_pseudo_labels

__all__ = ["pseudo_label", "open_labels", "label_ids", "finish_labels", "LabelJob"]


def open_labels(config: Config, checkpoint: str | os.PathLike, split: str | None, out: str | os.PathLike,
                save_maps: bool = False, maps_dir: str | os.PathLike | None = None,
                strict_source: bool = True) -> tuple[LabelJob, str | None]:
    """Make ``out`` the label folder of ``config`` (with ``refine.saliency.source: segmenter``:
    self-training's maps as a saliency folder) and the classifier at ``checkpoint``: its
    source.json is written, or checked (another checkpoint or settings: ValueError when
    ``strict_source``, else a note saying what changed, returned); half-written files of a
    killed run are removed. Returns the job and the note (None when nothing changed)."""
    config = saliency_config(config, require=True)
    if maps_dir is None and config.cam.method == "getam":  # the blocks GETAM reads: before the folder is claimed
        problem = start_block_problem(config.cam.start_block, read_depth(checkpoint), f"the classifier {checkpoint}")
        if problem:
            raise ValueError(problem)
    digest = checkpoint_digest(checkpoint)
    job = LabelJob(config, Path(checkpoint), digest, split, Path(out), save_maps,
                   None if maps_dir is None else Path(maps_dir))
    source = {**label_source(config.cam, config.refine, config.data, digest), "classes": read_classes(checkpoint)}
    note = claim_output_dir(job.out, source, strict=strict_source)
    removed = remove_stale_temporaries(job.out, config.flow.claim_timeout_s)
    if removed:
        print(f"removed {removed} half-written label file(s) of an interrupted run")
    return job, note


def label_ids(job: LabelJob, ids: list[str], crf_pool: bool = False, progress: bool = False,
              claimant: Claimant | None = None, wait: bool = False) -> dict:
    """Label the ``ids`` of ``job`` that have no PNG in its folder yet, or a stale one (made from
    another image file, tags or class list: ``label_plan.labels_to_make``), each under a claim
    (``image_claims``, held as ``claimant``) so that no two writers label one image at once.

    Returns the counts {ok, skipped, failed; "redone" when some were stale}, ``loads`` (1 when
    this call loaded the classifier: it is cached per worker thread, ``worker_cache``), when it
    labelled ``saliency`` (the saliency source's name), and when it met other holders' claims:
    ``busy`` (ids a live holder has: left to it; with ``wait`` none: the call waits until each
    is released or stale, then labels what is still missing), ``others`` (ids it waited for) and
    ``taken_over`` (ids whose holder was gone: labelled here), each a list of {"holder": its
    record, "said": it in words, "ids"}.
    crf_pool: run the CRF in a pool of ``refine.crf.workers`` processes (a single process
    labelling); otherwise in this thread (the flows' task runner workers are the parallelism)."""
    todo = labels_to_make(worker_dataset(job), ids, job.out)
    if not todo:
        return {"ok": 0, "skipped": len(ids), "failed": 0, "loads": 0}
    counts = {"ok": 0, "skipped": 0, "failed": 0, "loads": 0}
    busy, stale, waited = {}, {}, {}
    with ImageClaims(job.out, claimant or Claimant(), job.config.flow.claim_timeout_s) as claims:
        pending, polls = list(ids), 0
        while True:
            taken = claims.take(pending)
            stale.update(taken.stale)
            if taken.stale:
                remove_stale_temporaries(job.out, job.config.flow.claim_timeout_s)
            if taken.got:
                _add_counts(counts, _label_claimed(job, taken.got, crf_pool, progress))
            claims.release(taken.got)
            busy = taken.busy
            if not (wait and busy):
                break
            waited.update(busy)
            pending = [i for i in pending if i in busy]
            time.sleep(min(_WAIT_POLL_S * 1.5 ** polls, 5.0))  # 0.5 s, then less often: up to every 5 s
            polls += 1
    for key, held in (("busy", busy if not wait else {}), ("others", waited), ("taken_over", stale)):
        if held:
            counts[key] = _by_holder(held)
    return counts


_WAIT_POLL_S = 0.5  # how soon a waiting call looks again at the claims it waits for (first time)


def _label_claimed(job: LabelJob, ids: list[str], crf_pool: bool, progress: bool) -> dict:
    """The walk over ``ids`` (claimed by the caller) with this worker's cached labeler."""
    worker = worker_labeler(job, job.config.flow.torch_threads)
    crf = job.config.refine.crf
    with crf_executor(crf if crf_pool and crf.enabled else None) as executor:
        chain = worker.labeler.chain
        chain.executor = executor  # lent for this call: the cached labeler is this thread's alone
        try:  # every id: the walk skips the finished ones and records any its manifest lacks
            counts = write_pseudo_labels(worker.labeler, worker.dataset, job.out, batch_size=job.config.cam.batch_size,
                                         ids=ids, save_maps=job.save_maps, progress=progress)
        finally:
            chain.executor = None
    return {**counts, "loads": int(worker.loaded), "saliency": worker.labeler.saliency.name}


def _add_counts(total: dict, counts: dict) -> None:
    """Add the walk's ``counts`` into ``total`` (numbers summed, the saliency name kept)."""
    for key, value in counts.items():
        total[key] = value if isinstance(value, str) else total.get(key, 0) + value


def _by_holder(held: dict[str, dict]) -> list[dict]:
    """id → holder record, grouped: [{"holder": record, "said": its phrase (``describe_holder``),
    "ids": [...]}, ...] in the order first met."""
    grouped: dict[str, dict] = {}
    for image_id, record in held.items():
        said = describe_holder(record)
        grouped.setdefault(said, {"holder": record, "said": said, "ids": []})["ids"].append(image_id)
    return list(grouped.values())


def finish_labels(job: LabelJob, ids: list[str], counts: dict) -> dict:
    """After the labelling of ``ids``: the summary of the folder (``counts`` plus the labels'
    foreground / background / ignore shares, each class's share of the images tagged with it and
    the classes whose labels spread over the background (``wsss.eval.label_spread``, named in a
    warning line), and the mIoU when the data set has masks and ``ids``
    are all of it: written to OUT/evaluation.json) and the failures' reasons, printed."""
    dataset = open_dataset(job.config.data, job.split)
    summary = {"out_dir": str(job.out), "total": len(ids), **{k: counts[k] for k in ("ok", "skipped", "failed")}}
    if counts.get("redone"):
        summary["redone"] = counts["redone"]
    if counts["failed"]:
        reasons = failure_reasons(job.out, ids)
        print(f"{counts['failed']} image(s) failed (see {job.out / MANIFEST}), e.g. " + "; ".join(reasons[:3]))
    shares, summary["class_shares"] = label_coverage(job.out, dataset, ids)
    summary["label_shares"] = {k: v if k == "images" else round(float(v), 4) for k, v in shares.items()}
    print(f"labels cover: {100 * shares['foreground']:.1f} % classes, {100 * shares['background']:.1f} % background, "
          f"{100 * shares['ignore']:.1f} % ignore ({shares['images']} images)")
    summary["spreading"] = spreading_classes(summary["class_shares"])
    for item in summary["spreading"]:
        print(f"warning: the labels of class {item['class']!r} spread over the background: {item['why']}. "
              f"Try: {item['try']}")
    if not has_masks(dataset):
        print("no masks in the data set: the quality of these pseudo-labels is unmeasured")
    elif ids == list(dataset.ids):
        summary["scores"] = evaluate_folder(job.config, job.out, job.split, json_path=job.out / "evaluation.json",
                                            progress=False)
        summary["mIoU"] = summary["scores"]["mIoU"]
    return summary


def pseudo_label(config: Config, checkpoint: str | os.PathLike, split: str | None, out: str | os.PathLike,
                 save_maps: bool = False, progress: bool = True) -> dict:
    """The whole step in this process (``wsss pseudo-label``): labels for every image of
    ``config.data`` / ``split`` (None: every image) into ``out``, the CRF in a pool; a second run
    on the same folder is refused while this one holds it. Returns the summary
    (``finish_labels``) with the seconds taken."""
    with hold_folder(out):
        job, _ = open_labels(config, checkpoint, split, out, save_maps=save_maps)
        ids = list(open_dataset(job.config.data, split).ids)
        started = time.perf_counter()
        counts = label_ids(job, ids, crf_pool=True, progress=progress, claimant=Claimant(run="wsss pseudo-label"),
                           wait=True)  # a flow run labelling the same folder: wait for the images it holds
        summary = finish_labels(job, ids, counts)
    seconds = round(time.perf_counter() - started, 2)
    return {**summary, "seconds": seconds, **({"saliency": counts["saliency"]} if "saliency" in counts else {})}
