"""The watched folder of the ``label_inbox`` flow.

The inbox is a data set in the plain folder format that grows:

    INBOX/images/       new images arrive here (any name; the id is the file stem)
    INBOX/tags.csv      header ``image,tags``; a row per image (tags separated by ';')
    INBOX/classes.txt   written from the classifier on the first run when absent

An image is *ready* once it is listed in tags.csv, its file exists, and the file has not
changed for ``settle_seconds`` (a file still being copied is left for the next run). Files
without a row are *untagged*, rows without a file are *missing*; both wait. An image
labelled before whose file or tags changed since is labelled again (``wsss.data.input_records``).
An image that failed (e.g. a corrupt file) is not tried again until its file or its tags change: the
fingerprints of failures are kept in OUT/labels/failed_fingerprints.json.

Outputs (``flow.inbox.out``, default RUN/inbox):

    OUT/labels/<id>.png, OUT/labels/manifest.jsonl             pseudo-labels (pseudo_labels flow)
    OUT/predictions/<id>.png, OUT/predictions/manifest.jsonl   segmenter predictions, when one exists
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from wsss.config import DataConfig, InboxConfig
from wsss.data.folder import CLASSES_FILE, TAGS_FILE, FolderDataset, read_classes
from wsss.data.images import IMAGE_EXTENSIONS
from wsss.data.input_records import stale_outputs
from wsss.data.manifest import MANIFEST, read_manifest
from wsss.files import is_finished, write_json, write_text
from wsss.layout import RunLayout
from wsss.steps.label_plan import image_fingerprint


@dataclass
class InboxPaths:
    """Where the inbox flow reads and writes, resolved from the ``flow.inbox`` section."""

    folder: Path
    labels: Path
    predictions: Path
    classifier: Path
    segmenter: Path

    @classmethod
    def of(cls, inbox: InboxConfig, run: RunLayout, segmenter_mode: str) -> "InboxPaths":
        """inbox: ``flow.inbox``; run: the run folder whose classifier (and segmenter of
        ``segmenter_mode``) label the inbox unless ``inbox`` names others."""
        out = Path(inbox.out or run.inbox)
        return cls(folder=Path(inbox.folder), labels=out / "labels", predictions=out / "predictions",
                   classifier=Path(inbox.classifier or run.classifier.final),
                   segmenter=Path(inbox.segmenter or run.segmenter(segmenter_mode).final))


def predictions_to_make(dataset: FolderDataset, ids: list[str], paths: InboxPaths) -> list[str]:
    """Of ``ids``, those labelled that have no prediction yet, or one made from another image
    file (predictions do not depend on the tags)."""
    labelled = [i for i in ids if is_finished(paths.labels / f"{i}.png")]
    stale = stale_outputs(dataset, labelled, paths.predictions, tags=False)
    return [i for i in labelled if i in stale or not is_finished(paths.predictions / f"{i}.png")]


def inbox_data(inbox: InboxConfig) -> DataConfig:
    """The inbox folder as a data set section (plain folder format, every image, no splits)."""
    return DataConfig(format="folder", root=inbox.folder, train_split=None, val_split=None)


def ensure_classes(folder: Path, classifier: Path) -> list[str]:
    """The inbox's class names; on first use, classes.txt is written from the classifier's."""
    path = folder / CLASSES_FILE
    if path.is_file():
        return read_classes(path)
    from wsss.models.checkpoint import read_classes as checkpoint_classes

    classes = checkpoint_classes(classifier)
    write_text(path, "\n".join(classes) + "\n")
    return classes


@dataclass
class InboxScan:
    """What the inbox holds right now (ids in tags.csv order; untagged: file stems)."""

    dataset: FolderDataset | None
    ready: list[str] = field(default_factory=list)
    arriving: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)


def scan_inbox(folder: Path, settle_seconds: float, now: float | None = None) -> InboxScan:
    """Sort the inbox's images into ready, arriving, missing and untagged (see the module
    docstring). Raises DatasetError for a malformed tags.csv or classes.txt."""
    now = time.time() if now is None else now
    images = folder / "images"
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if images.is_dir() else []
    if not (folder / TAGS_FILE).is_file():
        return InboxScan(dataset=None, untagged=[p.stem for p in files])
    dataset = FolderDataset(folder)
    scan = InboxScan(dataset=dataset)
    for image_id in dataset.ids:
        path = Path(dataset.image_path(image_id))
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            scan.missing.append(image_id)
            continue
        (scan.ready if age >= settle_seconds else scan.arriving).append(image_id)
    listed = set(dataset.ids)
    scan.untagged = [p.stem for p in files if p.stem not in listed]
    return scan


FAILURES = "failed_fingerprints.json"


def unchanged_failures(dataset: FolderDataset, ids: list[str], labels_dir: Path) -> set[str]:
    """The ids that failed in an earlier run and whose file and tags are unchanged since (they
    would fail again; they are tried once they change)."""
    path = labels_dir / FAILURES
    if not path.is_file():
        return set()
    remembered = json.loads(path.read_text(encoding="utf-8"))
    return {i for i in ids if i in remembered and remembered[i] == image_fingerprint(dataset, i)}


def remember_failures(fingerprints: dict[str, dict], labels_dir: Path) -> None:
    """After a run over the ids of ``fingerprints`` (taken before it): keep the fingerprints of
    those whose latest manifest entry is "failed", forget those that are now labelled."""
    path = labels_dir / FAILURES
    remembered = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entries = read_manifest(labels_dir / MANIFEST)
    for image_id, fingerprint in fingerprints.items():
        if entries.get(image_id, {}).get("status") == "failed":
            remembered[image_id] = fingerprint
        else:
            remembered.pop(image_id, None)
    write_json(path, remembered)
