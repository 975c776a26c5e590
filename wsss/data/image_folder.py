"""A folder of untagged images as a data set (``wsss predict --images DIR``).

Ids are the file stems of the image files directly inside the folder (sorted by file name);
samples carry no tags (all zeros), no mask and no saliency.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.images import IMAGE_EXTENSIONS, read_rgb

__all__ = ["ImageFolder"]


class ImageFolder(Dataset):
    """The image files of ``folder``; DatasetError when it is missing or holds none."""

    def __init__(self, folder: str | os.PathLike, classes: list[str]) -> None:
        self.root = Path(folder)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: image folder not found")
        files = sorted(p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError(f"{self.root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.classes = list(classes)
        self._files: dict[str, Path] = {}
        for path in files:
            if path.stem in self._files:
                raise DatasetError(f"{self.root}: {self._files[path.stem].name} and {path.name} share the id "
                                   f"{path.stem!r} (outputs are <id>.png); rename one of them")
            self._files[path.stem] = path
        self.ids = list(self._files)

    def image_path(self, image_id: str) -> Path:
        return self._files[image_id]

    def mask_path(self, image_id: str) -> None:
        return None

    def saliency_path(self, image_id: str) -> None:
        return None

    def tag_names(self, image_id: str) -> list[str]:
        return []

    def load(self, image_id: str, masks: bool = True) -> Sample:
        """The image alone (no tags, no mask, whatever ``masks`` says)."""
        return Sample(id=image_id, image=read_rgb(self._files[image_id]),
                      tags=np.zeros(len(self.classes), dtype=np.float32))
