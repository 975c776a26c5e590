"""What a data set holds, read quickly: the facts ``wsss init`` derives settings from.

``survey_dataset(data)`` opens the training and validation splits of a ``data`` section and
reads, without decoding a single image: the classes, the image counts, the tags per class,
the image sizes (from the files' headers, at most ``max_headers`` of them, evenly spaced),
and whether masks and saliency maps are there (checked on a few images of each split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss.config import DataConfig
from wsss.data import open_dataset
from wsss.data.base import Dataset, DatasetError
from wsss.data.images import stored_image_size

__all__ = ["DataSurvey", "survey_dataset"]


@dataclass
class DataSurvey:
    """The facts of one data set (``data``: the section it was opened with).

    sizes: N×2 int array of (H, W) of the sampled training images whose header could be read.
    tagged: C int array, training images tagged with each class.
    """

    data: DataConfig
    classes: list[str]
    train_images: int
    val_images: int | None  # None: no validation split (data.val_split is None)
    tagged: np.ndarray
    tags_per_image: float
    sizes: np.ndarray
    unreadable_headers: int
    val_masks: bool
    train_masks: bool
    saliency: bool
    notes: list[str] = field(default_factory=list)

    @property
    def long_side(self) -> int:
        """The median longer side of the training images, pixels."""
        return int(np.median(self.sizes.max(axis=1))) if len(self.sizes) else 0

    @property
    def short_side(self) -> int:
        """The median shorter side of the training images, pixels."""
        return int(np.median(self.sizes.min(axis=1))) if len(self.sizes) else 0

    def describe(self) -> list[str]:
        """Lines for the terminal and the YAML's header."""
        data = self.data
        sizes = self.sizes
        distinct = len({tuple(s) for s in sizes.tolist()})
        square = float(np.mean(sizes[:, 0] == sizes[:, 1])) if len(sizes) else 0.0
        counts = ", ".join(f"{name} {int(n)}" for name, n in zip(self.classes, self.tagged))
        lines = [
            f"data set: {data.root} ({data.format})",
            f"classes ({len(self.classes)}): {', '.join(self.classes[:30])}{' …' if len(self.classes) > 30 else ''}",
            f"training images: {self.train_images} (split {data.train_split or 'all'}); validation images: "
            + (f"{self.val_images} (split {data.val_split})" if self.val_images is not None else "none"),
            f"tags per training image: {self.tags_per_image:.2f}; images per class: {counts}",
        ]
        if len(sizes):
            lines.append(
                f"image sizes ({len(sizes)} headers read): longer side median {self.long_side} px "
                f"(from {int(sizes.max(axis=1).min())} to {int(sizes.max(axis=1).max())}), shorter side median "
                f"{self.short_side} px; {distinct} distinct sizes, {square:.0%} square")
        if self.unreadable_headers:
            lines.append(f"{self.unreadable_headers} image header(s) could not be read (wsss data check says why)")
        lines.append(f"masks: {'validation split' if self.val_masks else 'none on the validation split'}"
                     f"{', training split' if self.train_masks else ''}; saliency maps: "
                     f"{'yes' if self.saliency else 'none'}")
        return lines + self.notes


def survey_dataset(data: DataConfig, max_headers: int = 2000, probe: int = 8) -> DataSurvey:
    """Open ``data``'s training split (and validation split, when set) and read its facts.

    max_headers: image headers read for the size distribution (evenly spaced ids).
    probe: images per split whose mask and saliency files are looked for.
    Raises DatasetError (naming the file) when a split cannot be opened or holds no images.
    """
    train = open_dataset(data, data.train_split)
    if not len(train):
        raise DatasetError(f"{data.root}: no images in the training split {data.train_split!r}")
    val = open_dataset(data, data.val_split) if data.val_split is not None else None
    tagged = np.zeros(len(train.classes), dtype=np.int64)
    tags = 0
    for image_id in train.ids:
        vector = train.tags_vector([n for n in train.tag_names(image_id) if n in train.classes], "")
        tagged += vector.astype(np.int64)
        tags += int(vector.sum())
    sizes, unreadable = _sizes(train, max_headers)
    notes = []
    untagged_classes = [name for name, n in zip(train.classes, tagged) if n == 0]
    if untagged_classes:
        notes.append(f"classes no training image is tagged with: {', '.join(untagged_classes)}")
    return DataSurvey(
        data=data, classes=list(train.classes), train_images=len(train), val_images=None if val is None else len(val),
        tagged=tagged, tags_per_image=tags / len(train), sizes=sizes, unreadable_headers=unreadable,
        val_masks=val is not None and _has_files(val, val.mask_path, probe),
        train_masks=_has_files(train, train.mask_path, probe),
        saliency=_has_files(train, train.saliency_path, probe), notes=notes)


def _spaced(ids: list[str], count: int) -> list[str]:
    if len(ids) <= count:
        return list(ids)
    return [ids[i] for i in np.linspace(0, len(ids) - 1, count).round().astype(int)]


def _sizes(dataset: Dataset, limit: int) -> tuple[np.ndarray, int]:
    sizes, unreadable = [], 0
    for image_id in _spaced(dataset.ids, limit):
        size = stored_image_size(dataset.image_path(image_id))
        if size is None:
            unreadable += 1
        else:
            sizes.append(size)
    return np.array(sizes, dtype=np.int64).reshape(-1, 2), unreadable


def _has_files(dataset: Dataset, path_of, probe: int) -> bool:
    """True when most of ``probe`` evenly spaced images have the file ``path_of(id)`` names."""
    ids = _spaced(dataset.ids, probe)
    found = 0
    for image_id in ids:
        try:
            path = path_of(image_id)
        except (DatasetError, KeyError):
            path = None
        found += path is not None and Path(path).is_file()
    return bool(ids) and found * 2 > len(ids)
