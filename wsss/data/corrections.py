"""A person's corrected labels, and the labels a two-stage segmenter learns from.

    labels = training_labels(RUN/pseudo_labels, dataset, corrections="fixed.json", work_dir=RUN/segmenter_two_stage/corrections)
    labels.path("img_0042")      # the corrected label where there is one, else the pseudo-label
    labels.corrected             # {id: PNG} of the corrected images

``train.segmenter.corrections`` names what came back from the review (``wsss export --review N``
wrote the least confident images with their pseudo-labels as pre-annotations; a person fixed
them in CVAT, Label Studio or any tool that exports COCO):

- **a COCO instances JSON**: every image it lists is a corrected image (one left without
  annotations is all background: the person said so). Its masks are rasterised as
  ``wsss.data.coco.CocoDataset`` rasterises a COCO data set (polygons, RLE; a pixel two
  categories claim and crowd regions: 255) and written once to ``work_dir/<id>.png``. Its
  ``file_name`` values are relative to the data set's images folder (``images_root``, as the
  export wrote them); its category names must be classes of the data set (any subset, any ids).
- **a folder of label PNGs** ``<id>.png`` (0 background, 1..C the data set's classes, 255 ignore):
  each is a corrected image, used where it is.

Every corrected image must be an image of the data set, of its size: anything else is an error
naming the file and what was expected. The pseudo-label files are never written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss.data.base import Dataset, DatasetError
from wsss.data.coco import CocoDataset
from wsss.data.coco_export import images_root
from wsss.data.images import stored_image_size
from wsss.data.label_png import IGNORE_INDEX, read_label_png, write_label_png

__all__ = ["TrainingLabels", "read_corrections", "training_labels"]


@dataclass(frozen=True)
class TrainingLabels:
    """Where each training image's label is: ``corrected[id]`` when a person corrected it, else
    ``pseudo/<id>.png``. ``source``: what the corrections came from (None: none)."""

    pseudo: Path
    corrected: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None

    def path(self, image_id: str) -> Path:
        return self.corrected.get(image_id) or self.pseudo / f"{image_id}.png"


def training_labels(pseudo: str | os.PathLike, dataset: Dataset, corrections: str | os.PathLike | None = None,
                    work_dir: str | os.PathLike | None = None) -> TrainingLabels:
    """The labels a two-stage run learns from: the pseudo-labels in ``pseudo``, replaced by the
    corrections (module docstring) where there are some; a COCO JSON's masks are written to
    ``work_dir`` (required then)."""
    if corrections is None:
        return TrainingLabels(Path(pseudo))
    return TrainingLabels(Path(pseudo), read_corrections(corrections, dataset, work_dir), Path(corrections))


def read_corrections(source: str | os.PathLike, dataset: Dataset,
                     work_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """{id: label PNG} of the corrected images in ``source`` (a COCO JSON or a folder of label
    PNGs; module docstring). DatasetError naming the file when one does not fit the data set."""
    source = Path(source)
    if source.is_dir():
        return _from_folder(source, dataset)
    if source.is_file() and source.suffix.lower() == ".json":
        if work_dir is None:
            raise ValueError(f"{source}: a COCO JSON of corrections needs a folder to write its masks to")
        return _from_coco(source, dataset, Path(work_dir))
    raise DatasetError(f"train.segmenter.corrections={source}: expected a COCO instances JSON (.json) or a folder of "
                       "<id>.png label maps" + ("" if source.exists() else " (not found)"))


def _from_folder(folder: Path, dataset: Dataset) -> dict[str, Path]:
    known, found = set(dataset.ids), {}
    for path in sorted(folder.glob("*.png")):
        if path.name.startswith("."):  # an interrupted atomic write's temporary file
            continue
        image_id = path.stem
        if image_id not in known:
            raise DatasetError(f"{path}: a correction of {image_id!r}, which is not an image of the data set "
                               f"(its images are named like {dataset.ids[0]!r})")
        label = read_label_png(path)
        _check(label, image_id, dataset, str(path))
        found[image_id] = path
    if not found:
        raise DatasetError(f"{folder}: no <id>.png label maps in it")
    return found


def _from_coco(path: Path, dataset: Dataset, work_dir: Path) -> dict[str, Path]:
    coco = CocoDataset(images_root(dataset), path, unannotated="keep")
    unknown = [name for name in coco.classes if name not in dataset.classes]
    if unknown:
        raise DatasetError(f"{path}: categories {unknown} are not classes of the data set ({dataset.classes})")
    to_label = np.full(256, IGNORE_INDEX, np.uint8)  # the JSON's label values → the data set's
    to_label[0] = 0
    for index, name in enumerate(coco.classes):
        to_label[index + 1] = dataset.classes.index(name) + 1
    known, found = set(dataset.ids), {}
    work_dir.mkdir(parents=True, exist_ok=True)
    for image_id in coco.ids:
        if image_id not in known:
            raise DatasetError(f"{path}: image {coco.image_path(image_id)} is not an image of the data set")
        label = to_label[coco.read_mask(image_id)]
        _check(label, image_id, dataset, f"{path} (image {image_id})")
        write_label_png(work_dir / f"{image_id}.png", label)
        found[image_id] = work_dir / f"{image_id}.png"
    return found


def _check(label: np.ndarray, image_id: str, dataset: Dataset, where: str) -> None:
    """DatasetError when ``label`` (H×W uint8) is not of the image's size or holds a value that is
    not 0..C or 255."""
    size = stored_image_size(dataset.image_path(image_id))
    if size is not None and label.shape != tuple(size):
        raise DatasetError(f"{where}: the label is {label.shape[1]}×{label.shape[0]}, the image "
                           f"{dataset.image_path(image_id)} is {size[1]}×{size[0]}")
    bad = sorted(set(np.unique(label).tolist()) - set(range(dataset.num_classes + 1)) - {IGNORE_INDEX})
    if bad:
        raise DatasetError(f"{where}: values {bad} are not classes (0..{dataset.num_classes}) or 255")
