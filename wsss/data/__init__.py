"""Data sets behind one interface (``Dataset`` → ``Sample``): VOC layout, plain folder, demo set."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.folder import FolderDataset
from wsss.data.voc import VocDataset

__all__ = ["Dataset", "DatasetError", "Sample", "FolderDataset", "VocDataset", "detect_format", "open_dataset"]


def detect_format(root: str | os.PathLike) -> str:
    """'voc' for a folder with JPEGImages/, 'folder' for one with tags.csv; DatasetError otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: data set folder not found")
    if (root / "JPEGImages").is_dir():
        return "voc"
    if (root / "tags.csv").is_file():
        return "folder"
    raise DatasetError(
        f"{root}: unknown data set layout; expected a VOC2012 folder (JPEGImages/, ImageSets/) "
        "or a plain folder (images/, tags.csv, classes.txt)"
    )


def open_dataset(data, split: str | None) -> Dataset:
    """Open the data set described by a ``DataConfig`` for one split, with its size limit
    (``data.max_side``, ``data.oversize``: ``wsss.data.size_limit``).

    For format 'synth' the demo set is generated into ``data.root`` first if it is not there
    (a folder holding another set raises ValueError naming both).
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
    raise ValueError(f"data.format={data.format!r}: expected one of synth, folder, voc")
