"""The export step: label PNGs → a COCO instances JSON (RLE masks) that annotation tools import."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.data.coco_export import coco_summary, labels_to_coco, write_coco

__all__ = ["export_labels"]


def export_labels(config: Config, labels: str | os.PathLike, split: str | None, out: str | os.PathLike,
                  per: str = "region", min_area: int = 0, boxes_only: bool = False) -> Path:
    """Write ``labels/<id>.png`` over the data set of ``config.data`` as COCO JSON to ``out``
    (atomically); with ``split``, only that split's images (labels of the data set's other
    images are skipped; a label of an image not in the data set is still an error). per: one
    annotation per 8-connected region of a class ("region") or per class and image ("class");
    segments under ``min_area`` pixels are left out; boxes_only: no segmentation. Prints the
    summary; returns the JSON's path."""
    whole = open_dataset(config.data, None)
    ids = open_dataset(config.data, split).ids if split is not None else None
    coco = labels_to_coco(labels, whole, per=per, min_area=min_area, ids=ids, boxes_only=boxes_only)
    path = write_coco(out, coco)
    print(coco_summary(coco))
    print(f"\nwrote {path}; its file names are relative to data_path: {coco['info']['wsss']['images_root']}")
    return path
