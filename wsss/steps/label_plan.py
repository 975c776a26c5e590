"""Planning pseudo-label work from what is on disk.

A label folder (as ``wsss pseudo-label`` writes it) holds ``<id>.png`` per finished image and
``manifest.jsonl`` with every image's outcome. What counts as finished is decided on disk,
never from Prefect's database: an image is done when its PNG exists (PNGs are written
atomically, so an existing one is complete) and was made from the image file, tags and class
list it has now (its manifest entry's input record, ``wsss.data.input_records``).

Shards are cut from the full id list, so a shard's inputs are the same from run to run; each
image travels with a fingerprint (size and mtime of its file, and its tags), so a shard's
cache key changes when one of its images is replaced or re-tagged.

What made a folder's labels is recorded in ``source.json`` (``wsss.steps.provenance``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wsss.config import Config
from wsss.data.base import Dataset, DatasetError
from wsss.data.input_records import stale_outputs
from wsss.data.manifest import MANIFEST, Manifest, read_manifest
from wsss.files import is_finished
from wsss.steps.image_claims import Claimant, ImageClaims, live_claims


@dataclass(frozen=True)
class LabelJob:
    """One label folder's run, all that a worker needs (small: a flow sends it to every shard
    task, and Prefect hashes it into the shard's cache key).

    config: the settings (``data``, ``cam``, ``refine``, ``train.device``; ``flow`` for the
    flows); checkpoint: the classifier.pt and its SHA-256 ``digest``; split: the data set's split
    (None: every image); out: the label folder; save_maps: also write OUT/maps/<id>.npz;
    maps_dir: label from the refined maps saved there (the rule and CRF only) instead of
    computing them."""

    config: Config
    checkpoint: Path
    digest: str
    split: str | None
    out: Path
    save_maps: bool = False
    maps_dir: Path | None = None


def has_masks(dataset: Dataset) -> bool:
    """True when the data set's first image has a mask file (masks come for all or none)."""
    if not dataset.ids:
        return False
    path = dataset.mask_path(dataset.ids[0])
    return path is not None and Path(path).is_file()


def image_fingerprint(dataset: Dataset, image_id: str) -> dict:
    """{"size", "mtime_ns", "tags"} of one image; size/mtime None for a missing file, tags the
    names as written (or the error that reading them raised)."""
    path = Path(dataset.image_path(image_id))
    try:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except FileNotFoundError:
        size = mtime = None
    try:
        tags: list[str] | str = dataset.tag_names(image_id)
    except (DatasetError, OSError) as error:
        tags = f"error: {error}"
    return {"size": size, "mtime_ns": mtime, "tags": tags}


@dataclass
class Plan:
    """The work of one pseudo-label run: ``shards`` cut from all ids in the order given (each a
    list of [id, fingerprint] pairs, so a shard's inputs stay the same from run to run), and
    the ids already labelled on disk."""

    total: int
    done: set[str] = field(default_factory=set)
    shards: list[list[list]] = field(default_factory=list)

    def pending(self, shard: list[list]) -> int:
        """How many images of ``shard`` have no label yet."""
        return sum(1 for image_id, _ in shard if image_id not in self.done)


def plan_shards(dataset: Dataset, ids: list[str], out_dir: str | os.PathLike, shard_size: int) -> Plan:
    """Cut ``ids`` into shards of at most ``shard_size`` and note which are finished
    (``out_dir/<id>.png`` exists, is not empty and was made from today's image, tags and class
    list: ``wsss.data.input_records``)."""
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}: expected at least 1")
    items = [[image_id, image_fingerprint(dataset, image_id)] for image_id in ids]
    todo = set(labels_to_make(dataset, ids, out_dir))
    return Plan(total=len(ids), done={i for i in ids if i not in todo},
                shards=[items[i:i + shard_size] for i in range(0, len(items), shard_size)])


def unlabelled_ids(ids: list[str], out_dir: str | os.PathLike) -> list[str]:
    """The ``ids`` whose label is not on disk (or is an empty file)."""
    out = Path(out_dir)
    return [image_id for image_id in ids if not is_finished(out / f"{image_id}.png")]


def labels_to_make(dataset: Dataset, ids: list[str], out_dir: str | os.PathLike) -> list[str]:
    """The ``ids`` whose label is not on disk, or was made from another image file, other tags
    or another class list than ``dataset`` has now (stale: the walk makes it again)."""
    missing = unlabelled_ids(ids, out_dir)
    pending = set(missing)
    stale = stale_outputs(dataset, [i for i in ids if i not in pending], out_dir) if len(missing) < len(ids) else {}
    return [i for i in ids if i in pending or i in stale]


def failure_reasons(out_dir: str | os.PathLike, ids: list[str]) -> list[str]:
    """"id: reason" for each of ``ids`` whose latest manifest entry is "failed", in the order of ``ids``."""
    entries = read_manifest(Path(out_dir) / MANIFEST)
    return [f"{i}: {entries[i]['reason']}" for i in ids if entries.get(i, {}).get("status") == "failed"]


def reconcile_manifest(out_dir: str | os.PathLike, done: set[str], claimant: Claimant = Claimant(),
                       timeout_s: float = 120.0) -> int:
    """Before a run labels: record as ok the finished ids whose latest manifest entry is not "ok"
    (a run stopped between writing a label and recording it); returns how many were recorded.
    Each is claimed first (``image_claims``): one that another live run holds is left to it
    (it records it), so no image gets two lines. (A last line cut by a hard stop is ended by
    ``Manifest`` itself before it appends.)"""
    path = Path(out_dir) / MANIFEST
    entries = read_manifest(path)
    missing = sorted(i for i in done if entries.get(i, {}).get("status") != "ok")
    if not missing:
        return 0
    with ImageClaims(out_dir, claimant, timeout_s) as claims:
        got = claims.take(missing).got
        entries = read_manifest(path)  # read again once claimed: a holder that let go of one has recorded it
        missing = [i for i in got if entries.get(i, {}).get("status") != "ok"]
        if missing:
            with Manifest(path) as manifest:
                for image_id in missing:
                    manifest.record(image_id, "ok", "label found on disk; its run stopped before recording it")
    return len(missing)


_RANDOM_PART = 8  # the characters tempfile.mkstemp puts between a temporary's prefix and suffix


def remove_stale_temporaries(out_dir: str | os.PathLike, timeout_s: float = 120.0) -> int:
    """Delete half-written label files (``.<id>.XXXXXXXX.png``, left by a killed run); returns
    the count. A temporary of an image that a live holder claims (``image_claims``: another run
    writing into ``out_dir`` now) is left alone."""
    temporaries = [p for p in Path(out_dir).glob(".*.png") if len(p.name) > len(".png") + _RANDOM_PART + 2]
    if not temporaries:
        return 0
    removed = 0
    with ImageClaims(out_dir, Claimant(run="a check of half-written files"), timeout_s) as checker:
        held = live_claims(out_dir, sorted({_temporary_id(p) for p in temporaries}), checker)
        for path in temporaries:
            if _temporary_id(path) not in held:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _temporary_id(path: Path) -> str:
    """The image id of a label's temporary ``.<id>.XXXXXXXX.png`` (cut short for ids near the
    file system's name limit: ``wsss.files.atomic_path``)."""
    return path.name[1:-len(".png")][:-(_RANDOM_PART + 1)]
