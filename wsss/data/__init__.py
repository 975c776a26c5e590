"""Data sets behind one interface (``Dataset`` → ``Sample``): VOC layout, plain folder, COCO JSON, demo set."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.coco import CocoDataset
from wsss.data.folder import FolderDataset
from wsss.data.voc import VocDataset

__all__ = ["Dataset", "DatasetError", "Sample", "CocoDataset", "FolderDataset", "VocDataset", "detect_format",
           "open_dataset"]


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


def open_dataset(data, split: str | None) -> Dataset:
    """Open the data set described by a ``DataConfig`` for one split, with its size limit
    (``data.max_side``, ``data.oversize``: ``wsss.data.size_limit``).

    For format 'synth' the demo set is generated into ``data.root`` first if it is not there
    (a folder holding another set raises ValueError naming both). For format 'coco' the split
    picks the JSON (``wsss.data.coco``): ``data.val_split`` → ``data.coco_val_annotations`` over
    ``data.coco_val_root`` when set; ``data.train_split``, ``data.val_split`` otherwise and None →
    ``data.coco_annotations`` over ``data.root``; any other name raises DatasetError.
    """
    return _open(data, split).limit_size(data.max_side, data.oversize)


def _open(data, split: str | None) -> Dataset:
    if data.format == "synth":  # returns at once when data.root holds this very set
        from wsss.data.synth import generate_synth_dataset

        s = data.synth
        generate_synth_dataset(data.root, num_images=s.num_images, image_size=s.image_size,
                               val_fraction=s.val_fraction, seed=s.seed, colour_cue=s.colour_cue,
                               object_size=s.object_size, distractors=s.distractors)
        return FolderDataset(data.root, split=split, saliency_dir=data.saliency_dir)
    if data.format == "folder":
        return FolderDataset(data.root, split=split, saliency_dir=data.saliency_dir)
    if data.format == "voc":
        return VocDataset(data.root, split=split, masks=data.voc_masks, tags=data.voc_tags, saliency_dir=data.saliency_dir)
    if data.format == "coco":
        return _open_coco(data, split)
    raise ValueError(f"data.format={data.format!r}: expected one of synth, folder, voc, coco")


def _open_coco(data, split: str | None) -> Dataset:
    if data.coco_annotations is None:
        raise DatasetError("data.format is coco but data.coco_annotations is not set")
    annotations, root = data.coco_annotations, data.root
    if split is not None and split == data.val_split and data.coco_val_annotations is not None:
        annotations, root = data.coco_val_annotations, data.coco_val_root or data.root
    elif split is not None and split not in (data.train_split, data.val_split):
        raise DatasetError(f"split {split!r}: a COCO set has the splits data.train_split ({data.train_split!r}: "
                           f"{data.coco_annotations}) and data.val_split ({data.val_split!r}: "
                           f"{data.coco_val_annotations or data.coco_annotations})")
    return CocoDataset(root, annotations, min_area=data.coco_min_area, saliency_dir=data.saliency_dir,
                       unannotated=data.coco_unannotated)
