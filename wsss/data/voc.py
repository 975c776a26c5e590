"""PASCAL VOC 2012 layout.

    VOC2012/
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png       palette PNGs, 255 = ignore (optional)
      SegmentationClassAug/<id>.png    the augmented masks (optional, preferred by "auto")
      ImageSets/Segmentation/<split>.txt
      Annotations/<id>.xml             object names → image tags (optional)
      saliency/<id>.png                optional, or DataConfig.saliency_dir

Tags come from the XML annotations (every <object><name>) or, when there is no XML, from
the classes present in the mask.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np

from wsss.data.base import Dataset, DatasetError
from wsss.data.label_png import IGNORE_INDEX, read_label_png

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]


class VocDataset(Dataset):
    """VOC2012-layout data set.

    split: ImageSets/Segmentation/<split>.txt, or None for every id listed in any split file
        there (every image in JPEGImages when there are no split files).
    masks: which mask folder ("auto" prefers SegmentationClassAug when it exists).
    tags: "xml", "mask", or "auto" (XML when the image has an annotation file).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        masks: Literal["auto", "SegmentationClassAug", "SegmentationClass"] = "auto",
        tags: Literal["auto", "xml", "mask"] = "auto",
        saliency_dir: str | os.PathLike | None = None,
    ):
        self.root = Path(root)
        if not (self.root / "JPEGImages").is_dir():
            raise DatasetError(f"{self.root}: not a VOC2012 folder (no JPEGImages/ inside)")
        self.classes = list(VOC_CLASSES)
        if split is None:
            self.ids = self._all_listed_ids()
        else:
            split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not split_file.is_file():
                found = sorted(p.stem for p in split_file.parent.glob("*.txt"))
                raise DatasetError(f"{split_file}: split {split!r} not found; available: {found}")
            self.ids, self.split_file = self.read_split(split_file, first_word=True), split_file
        self.split = split
        escaping = [i for i in self.ids if "/" in i or "\\" in i or i in (".", "..")]
        if escaping:
            raise DatasetError(f"{self.root}: image ids {escaping[:5]} (split {split!r}) are not plain file names "
                               "(an id may not name a path outside JPEGImages/)")
        if masks == "auto":
            masks = "SegmentationClassAug" if (self.root / "SegmentationClassAug").is_dir() else "SegmentationClass"
        self._mask_dir = self.root / masks if (self.root / masks).is_dir() else None
        if tags not in ("auto", "xml", "mask"):
            raise ValueError(f"tags={tags!r}: expected one of auto, xml, mask")
        if tags == "mask" and self._mask_dir is None:
            raise DatasetError(f"{self.root}: tags from masks asked for, but there is no {masks}/ folder")
        self._tags_from = tags
        saliency = Path(saliency_dir) if saliency_dir is not None else self.root / "saliency"
        self._saliency_dir = saliency if saliency.is_dir() else None

    def _all_listed_ids(self) -> list[str]:
        split_files = sorted((self.root / "ImageSets" / "Segmentation").glob("*.txt"))
        if not split_files:
            return sorted(p.stem for p in (self.root / "JPEGImages").glob("*.jpg"))
        ids: dict[str, None] = {}  # train.txt and val.txt share ids with trainval.txt: each once
        for split_file in split_files:
            ids.update(dict.fromkeys(self.read_split(split_file, first_word=True)))
        return list(ids)

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path | None:
        return None if self._mask_dir is None else self._mask_dir / f"{image_id}.png"

    def saliency_path(self, image_id: str) -> Path | None:
        return None if self._saliency_dir is None else self._saliency_dir / f"{image_id}.png"

    def annotation_path(self, image_id: str) -> Path:
        return self.root / "Annotations" / f"{image_id}.xml"

    def tag_names(self, image_id: str) -> list[str]:
        xml = self.annotation_path(image_id)
        if self._tags_from == "xml" or (self._tags_from == "auto" and xml.is_file()):
            return _xml_object_names(xml)
        mask_path = self.mask_path(image_id)
        if mask_path is None or not mask_path.is_file():
            raise DatasetError(f"{image_id}: no annotation {xml} and no mask to derive tags from")
        return self._names_in_mask(read_label_png(mask_path), mask_path)

    def _names_in_mask(self, mask: np.ndarray, where: Path) -> list[str]:
        values = [int(v) for v in np.unique(mask) if v not in (0, IGNORE_INDEX)]
        bad = [v for v in values if v > len(self.classes)]
        if bad:
            raise DatasetError(f"{where}: mask values {bad} are not classes (expected 0..{len(self.classes)} or 255)")
        return [self.classes[v - 1] for v in values]



def _xml_object_names(path: Path) -> list[str]:
    """Distinct <object><name> entries of a VOC annotation, in order of first appearance."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise DatasetError(f"{path}: cannot parse annotation XML ({error})") from error
    names: list[str] = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name and name not in names:
            names.append(name)
    return names
