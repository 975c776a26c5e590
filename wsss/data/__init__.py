"""Data sets behind one interface (``Dataset`` → ``Sample``): VOC layout, plain folder, COCO JSON, demo set.

One way to open a data set, for every command and flow:

    data = dataset_section(config.data, path, fmt, annotations)   # the command line's --dataset, --format,
                                                                  # --annotations over the data section
    dataset = open_dataset(data, split)

so ``wsss pseudo-label --dataset D`` and the pipeline flow with ``data.root: D`` see the same ids,
tags and masks (``data.voc_masks``, ``data.voc_tags``, ``data.coco_*``, the size limit and the
saliency folder apply to both).
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import DataConfig
from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.coco import CocoDataset
from wsss.data.folder import FolderDataset
from wsss.data.voc import VocDataset

__all__ = ["Dataset", "DatasetError", "Sample", "CocoDataset", "FolderDataset", "VocDataset", "detect_format",
           "dataset_section", "open_dataset"]

FORMATS = ("auto", "voc", "folder", "coco")  # what --format takes


def detect_format(root: str | os.PathLike) -> str:
    """'voc' for a folder with JPEGImages/, 'folder' for one with tags.csv; DatasetError otherwise
    (COCO is never guessed: it needs its annotations JSON)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data set folder not found")
    if (root / "JPEGImages").is_dir():
        return "voc"
    if (root / "tags.csv").is_file():
        return "folder"
    raise DatasetError(
        f"{root}: unknown data set layout; expected a VOC2012 folder (JPEGImages/, ImageSets/) "
        "or a plain folder (images/, tags.csv, classes.txt); for a COCO images folder give --format coco "
        "--annotations FILE (data.format: coco, data.coco_annotations)"
    )


def dataset_section(data: DataConfig, path: str | os.PathLike | None, fmt: str = "auto",
                    annotations: str | os.PathLike | None = None) -> DataConfig:
    """The ``data`` section with a data set given on the command line: ``path`` (None: the section
    as it is), its format (auto: coco when ``annotations`` is given, else the folder's layout, see
    :func:`detect_format`) and, for COCO, the instances JSON of the images in ``path`` (one split,
    named after the JSON's stem). Every other setting of the section (VOC masks and tags, size
    limit, saliency folder, COCO options) is kept. ValueError for a format that contradicts
    ``annotations``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if path is None:
        if annotations is not None or fmt != "auto":
            raise ValueError("--format and --annotations describe --dataset: give --dataset too")
        return data
    if annotations is not None and fmt not in ("auto", "coco"):
        raise ValueError(f"--annotations {annotations} is for --format coco, not --format {fmt}")
    if fmt == "coco" and annotations is None:
        raise ValueError(f"--format coco needs --annotations FILE: the instances JSON of the images in {path}")
    if annotations is not None:
        return data.model_copy(update={"format": "coco", "root": Path(path), "coco_annotations": Path(annotations),
                                       "coco_val_annotations": None, "coco_val_root": None,
                                       "train_split": None, "val_split": None})
    return data.model_copy(update={"format": detect_format(path) if fmt == "auto" else fmt, "root": Path(path)})


def open_dataset(data: DataConfig, split: str | None) -> Dataset:
    """Open the data set described by a ``DataConfig`` for one split, with its size limit
    (``data.max_side``, ``data.oversize``: ``wsss.data.size_limit``).

    For format 'synth' the demo set is generated into ``data.root`` first if it is not there
    (a folder holding another set raises ValueError naming both). For format 'coco' the split
    picks the JSON (``wsss.data.coco``): ``data.val_split`` → ``data.coco_val_annotations`` over
    ``data.coco_val_root`` when set; ``data.train_split``, ``data.val_split`` otherwise and None →
    ``data.coco_annotations`` over ``data.root``; any other name raises DatasetError.
    """
    return _open(data, split).limit_size(data.max_side, data.oversize)


def _open(data: DataConfig, split: str | None) -> Dataset:
    if data.format == "synth":  # returns at once when data.root holds this very set
        from wsss.data.synth import generate_synth_dataset

        generate_synth_dataset(data.root, data.synth)
        return FolderDataset(data.root, split=split, saliency_dir=data.saliency_dir)
    if data.format == "folder":
        return FolderDataset(data.root, split=split, saliency_dir=data.saliency_dir)
    if data.format == "voc":
        return VocDataset(data.root, split=split, masks=data.voc_masks, tags=data.voc_tags, saliency_dir=data.saliency_dir)
    if data.format == "coco":
        return _open_coco(data, split)
    raise ValueError(f"data.format={data.format!r}: expected one of synth, folder, voc, coco")


def _open_coco(data: DataConfig, split: str | None) -> Dataset:
    if data.coco_annotations is None:
        raise DatasetError("data.format is coco but data.coco_annotations is not set")
    annotations, root = data.coco_annotations, data.root
    if split is not None and split == data.val_split and data.coco_val_annotations is not None:
        annotations, root = data.coco_val_annotations, data.coco_val_root or data.root
    elif split is not None and split not in (data.train_split, data.val_split, Path(annotations).stem):
        raise DatasetError(f"split {split!r}: a COCO set is one split per annotations file; here "
                           f"data.train_split ({data.train_split!r}: {data.coco_annotations}), data.val_split "
                           f"({data.val_split!r}: {data.coco_val_annotations or data.coco_annotations}), or the "
                           f"JSON's own stem ({Path(annotations).stem!r}); for another split give its annotations")
    return CocoDataset(root, annotations, min_area=data.coco_min_area, saliency_dir=data.saliency_dir,
                       unannotated=data.coco_unannotated)
