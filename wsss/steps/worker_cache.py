"""Models loaded once per worker, never passed as task arguments.

A task receives a ``LabelJob`` holding the checkpoint's path and digest (a few bytes to hash
and to send to a Dask worker); ``worker_labeler`` loads the classifier on the first call in a worker and keeps it
for every later shard of the same checkpoint and settings. The cache is per thread: a
classifier captures attention through hooks on its own modules, so two threads must not share
one instance (a process-pool or Dask worker runs one task at a time and loads it once).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wsss.data.base import Dataset

from wsss.steps.label_plan import LabelJob

if TYPE_CHECKING:
    from wsss.refine.chain import PseudoLabeler, SavedMapsLabeler

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()
_local = threading.local()


def checkpoint_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), remembered per (path, size, mtime) in this process."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _DIGEST_LOCK:
        if key not in _DIGESTS:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _DIGESTS[key] = digest.hexdigest()
        return _DIGESTS[key]


@dataclass
class WorkerLabeler:
    """What a shard task needs: the chain with its classifier, and the data set it labels."""

    labeler: PseudoLabeler | SavedMapsLabeler
    dataset: Dataset
    loaded: bool  # True when this call loaded the model (False: it came from the cache)


def worker_dataset(job: LabelJob) -> Dataset:
    """The data set of ``job`` (``data`` / ``job.split``), opened once per thread (a COCO
    annotations file of a large set takes seconds to read; every shard needs it) and again
    when one of its index files changed (tags.csv re-written: new images, corrected tags)."""
    from wsss.data import open_dataset

    key = (job.config.data.model_dump_json(), job.split)
    cached = getattr(_local, "dataset", None)
    if cached is None or cached[0] != key or cached[2] != _stamps(cached[1]):
        dataset = open_dataset(job.config.data, job.split)
        cached = _local.dataset = (key, dataset, _stamps(dataset))
    return cached[1]


def _stamps(dataset: Dataset) -> list[tuple[int, int] | None]:
    """(size, mtime) of each of the data set's index files (None: gone)."""
    stamps = []
    for path in dataset.index_files():
        try:
            stat = path.stat()
            stamps.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return stamps


def worker_labeler(job: LabelJob, torch_threads: int | None = None) -> WorkerLabeler:
    """The offline chain of ``job`` (its config's ``cam`` and ``refine`` sections, the classifier
    at ``job.checkpoint`` on ``train.device``, the data set of ``data`` / ``job.split``), cached in
    this thread. With ``job.maps_dir`` it labels from the refined maps saved there
    (``SavedMapsLabeler``; the classifier is not loaded) instead of computing them. The chain
    runs its CRF in this thread (no pool: the task runner's workers are the parallelism;
    ``labels_step.label_ids`` lends it one when a single process labels).

    A call with another checkpoint, digest, split or other settings replaces the cached one.
    Raises ValueError when the checkpoint changed since the job was made or its classes differ
    from the data set's.
    """
    import torch

    from wsss.models.checkpoint import load_classifier, read_classes, resolve_device
    from wsss.refine.chain import offline_labeler, saved_maps_labeler

    config, checkpoint = job.config, job.checkpoint
    data, cam, refine, device = config.data, config.cam, config.refine, config.train.device
    key = (str(checkpoint), job.digest, job.split, device, data.model_dump_json(), cam.model_dump_json(),
           refine.model_dump_json(), str(job.maps_dir))
    cached = getattr(_local, "entry", None)
    dataset = worker_dataset(job)
    if cached is not None and cached[0] == key and cached[1].dataset.classes == dataset.classes:
        return WorkerLabeler(cached[1].labeler, dataset, loaded=False)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    if checkpoint_digest(checkpoint) != job.digest:
        raise ValueError(f"{checkpoint}: the file changed since the flow started (digest {job.digest[:12]} expected)")
    if job.maps_dir is not None:
        model, classes = None, read_classes(checkpoint)
    else:
        model, classes, _ = load_classifier(checkpoint, resolve_device(device))
    if classes != dataset.classes:
        raise ValueError(f"{checkpoint}: classes {classes} differ from the data set's {dataset.classes} ({data.root})")
    single = refine.model_copy(update={"crf": refine.crf.model_copy(update={"workers": 1})})
    labeler = (saved_maps_labeler(job.maps_dir, single, dataset) if job.maps_dir is not None
               else offline_labeler(model, cam, single, dataset))
    entry = WorkerLabeler(labeler, dataset, loaded=model is not None)
    _local.entry = (key, entry)
    return entry
