"""The export step: label PNGs → a COCO instances JSON (RLE masks) that annotation tools import."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.data.coco_export import coco_summary, labels_to_coco, write_coco
from wsss.eval.review import review_queue
from wsss.steps.provenance import SOURCE, recorded_classes

__all__ = ["export_labels"]


def export_labels(config: Config, labels: str | os.PathLike, split: str | None, out: str | os.PathLike,
                  per: str = "region", min_area: int = 0, boxes_only: bool = False, review: int | None = None) -> Path:
    """Write ``labels/<id>.png`` over the data set of ``config.data`` as COCO JSON to ``out``
    (atomically); with ``split``, only that split's images (labels of the data set's other
    images are skipped; a label of an image not in the data set is still an error). per: one
    annotation per 8-connected region of a class ("region") or per class and image ("class");
    segments under ``min_area`` pixels are left out; boxes_only: no segmentation. Labels made
    with another class list than the data set's (their source.json records it) are refused.
    review: only the ``review`` least confident labels (``wsss.eval.review``: the confidences
    of the folder's manifest; among ``split``'s images with ``split``), least confident first in
    the printed list: the images a person should correct, which come back as
    ``train.segmenter.corrections``. Prints the summary; returns the JSON's path."""
    whole = open_dataset(config.data, None)
    recorded = recorded_classes(labels)
    if recorded is None:
        print(f"note: {labels} records no class names (no {SOURCE} of a wsss run, or an older one): its label "
              f"numbers are read with the data set's classes {whole.classes}")
    elif recorded != whole.classes:
        raise ValueError(f"{labels}: its labels were made with the classes {recorded} ({SOURCE}), the data set's "
                         f"classes are now {whole.classes}: label numbers would name other classes. Export with the "
                         "class list they were made with, or label again")
    ids = open_dataset(config.data, split).ids if split is not None else None
    if review is not None:
        ids = _review_ids(labels, open_dataset(config.data, split), review)
    coco = labels_to_coco(labels, whole, per=per, min_area=min_area, ids=ids, boxes_only=boxes_only)
    path = write_coco(out, coco)
    print(coco_summary(coco))
    print(f"\nwrote {path}; its file names are relative to data_path: {coco['info']['wsss']['images_root']}")
    if review is not None:
        print(f"after correcting them, train on the corrections: wsss train segmenter --set "
              f"train.segmenter.mode=two_stage --set train.segmenter.corrections={path}")
    return path


def _review_ids(labels: str | os.PathLike, dataset, count: int) -> list[str]:
    """The ``count`` least confident labelled images of ``dataset`` in ``labels`` (printed)."""
    if count < 1:
        raise ValueError(f"--review {count}: expected a number of images >= 1")
    queue = review_queue(labels, dataset, count=count)
    if not queue.ids:
        raise ValueError(f"{labels}: its manifest records no confidence for any image of the data set, so there is "
                         "no review queue (labels written by wsss pseudo-label or the flows record one)")
    print(f"the {len(queue.ids)} least confident of {len(queue.confidence)} labels: {', '.join(queue.ids[:10])}"
          + (" ..." if len(queue.ids) > 10 else ""))
    return queue.ids
