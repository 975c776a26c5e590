"""The export step: label PNGs → a COCO instances JSON (RLE masks) that annotation tools import."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.data.coco_export import coco_summary, labels_to_coco, write_coco
from wsss.steps.provenance import SOURCE, recorded_classes

__all__ = ["export_labels"]


def export_labels(config: Config, labels: str | os.PathLike, split: str | None, out: str | os.PathLike,
                  per: str = "region", min_area: int = 0, boxes_only: bool = False) -> Path:
    """Write ``labels/<id>.png`` over the data set of ``config.data`` as COCO JSON to ``out``
    (atomically); with ``split``, only that split's images (labels of the data set's other
    images are skipped; a label of an image not in the data set is still an error). per: one
    annotation per 8-connected region of a class ("region") or per class and image ("class");
    segments under ``min_area`` pixels are left out; boxes_only: no segmentation. Labels made
    with another class list than the data set's (their source.json records it) are refused.
    Prints the summary; returns the JSON's path."""
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
    coco = labels_to_coco(labels, whole, per=per, min_area=min_area, ids=ids, boxes_only=boxes_only)
    path = write_coco(out, coco)
    print(coco_summary(coco))
    print(f"\nwrote {path}; its file names are relative to data_path: {coco['info']['wsss']['images_root']}")
    return path
