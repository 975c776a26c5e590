"""The one interface every data set offers: samples of (image, tags, optional mask,
optional saliency, id).
"""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.data.images import read_gray01, read_rgb
from wsss.data.label_png import read_label_png


class DatasetError(ValueError):
    """A data set entry that is malformed: names the file or value and what was expected."""


def read_text_file(path: Path, what: str) -> str:
    """The text of ``path`` (a class list, tags.csv, a split file) decoded as UTF-8, a byte-order
    mark at its start dropped (as editors on Windows write one); DatasetError naming the file, the
    first byte that is not UTF-8 and its offset otherwise."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        utf16 = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        offset = error.start + len(data) - len(error.object)  # after a byte-order mark the codec counts from it
        raise DatasetError(f"{path}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset}{utf16}; "
                           f"expected the {what} as UTF-8 (save it with that encoding)") from None


@dataclass
class Sample:
    """One image of a data set.

    image:    H×W×3 uint8 RGB.
    tags:     C float32 multi-hot (1 = the class is present), C = len(dataset.classes).
    mask:     H×W uint8 (0 background, 1..C classes, 255 ignore) or None.
    saliency: H×W float32 in [0, 1] or None.
    source_size: (H, W) of the image file when a walk shrank the image to ``data.max_side``
        (``wsss.data.size_limit``; outputs go back to it), else None.
    """

    id: str
    image: np.ndarray
    tags: np.ndarray
    mask: np.ndarray | None = None
    saliency: np.ndarray | None = None
    source_size: tuple[int, int] | None = None


class Dataset(abc.ABC):
    """A list of image ids with class names; ``load(id)`` reads one sample from disk.

    Subclasses set ``classes`` (foreground names; label i+1 is classes[i]) and ``ids``, and
    implement ``tag_names`` and the file lookups (also used by ``wsss data check``).
    """

    classes: list[str]
    ids: list[str]
    max_side: int | None = None  # the walks' size limit (``wsss.data.size_limit``); None: none
    oversize: str = "resize"
    split_file: Path | None = None  # the file that lists the split's ids, when there is one
    read_warnings: tuple[tuple[str, str], ...] = ()  # (file, message): what reading the set warned of (``warn``)

    def warn(self, where, message: str) -> None:
        """Something odd but usable in the data set's files: printed on stderr at once (``warning:
        FILE: message``) and kept in ``read_warnings``, which ``wsss data check`` lists."""
        self.read_warnings = (*self.read_warnings, (str(where), message))
        print(f"warning: {where}: {message}", file=sys.stderr, flush=True)

    def read_split(self, path: Path, first_word: bool = False) -> list[str]:
        """The ids a split file lists, one a line (blank lines skipped; ``first_word``: the first
        word of each line, as in VOC's ``<id> 1`` lists), in the order of their first line. An id
        listed more than once is kept once (it would be labelled, trained on and scored twice),
        with a warning naming the file and the ids (:meth:`warn`)."""
        counts: dict[str, int] = {}
        for line in read_text_file(path, "split file (one id a line)").splitlines():
            if line.strip():
                image_id = line.split()[0] if first_word else line.strip()
                counts[image_id] = counts.get(image_id, 0) + 1
        repeated = [image_id for image_id, count in counts.items() if count > 1]
        if repeated:
            self.warn(path, f"{len(repeated)} id(s) listed more than once, each kept once: "
                            f"{', '.join(repeated[:10])}{', …' if len(repeated) > 10 else ''}")
        return list(counts)

    def index_files(self) -> list[Path]:
        """The files that define the set's ids, tags and classes, read once when it is opened
        (a data set kept open across runs is opened again when one of them changed): the split
        file, when there is one; the folder format adds classes.txt and tags.csv, COCO its JSON."""
        return [] if self.split_file is None else [Path(self.split_file)]

    def limit_size(self, max_side: int | None, oversize: str = "resize") -> "Dataset":
        """Set the size limit the walks over this data set apply (``data.max_side``,
        ``data.oversize``); returns the data set."""
        self.max_side, self.oversize = max_side, oversize
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def __iter__(self):
        for image_id in self.ids:
            yield self.load(image_id)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abc.abstractmethod
    def image_path(self, image_id: str):
        """Path of the image file of ``image_id``."""

    @abc.abstractmethod
    def mask_path(self, image_id: str):
        """Path where the mask of ``image_id`` is expected (COCO: the annotations JSON it is
        rasterised from), or None if the set has no masks."""

    def read_mask(self, image_id: str) -> np.ndarray:
        """The H×W uint8 mask of ``image_id`` (0 background, 1..C, 255 ignore): the label PNG at
        ``mask_path``; a set whose masks are not files overrides it (COCO rasterises them)."""
        return read_label_png(self.mask_path(image_id))

    @abc.abstractmethod
    def saliency_path(self, image_id: str):
        """Path where the saliency map of ``image_id`` is expected, or None."""

    @abc.abstractmethod
    def tag_names(self, image_id: str) -> list[str]:
        """The class names tagged on ``image_id`` as written in the source (may hold unknown names)."""

    def left_out(self) -> dict[str, str]:
        """Images the data set's files list but its ``ids`` leave out, id → why (none by
        default; a COCO set skips images without any annotation). ``wsss data check`` counts them."""
        return {}

    def tags_source(self, image_id: str) -> str:
        """Where the tags of ``image_id`` come from, for error messages."""
        return f"tags of {image_id}"

    def load(self, image_id: str, masks: bool = True) -> Sample:
        """Read one sample: the image, its mask (checked against the image's size) when the set
        has masks and ``masks`` is True (False: not read, ``mask`` None), its tags, its saliency
        map when there is one. Raises DatasetError / ImageReadError naming the file."""
        image = read_rgb(self.image_path(image_id))
        mask = None
        mask_path = self.mask_path(image_id) if masks else None
        if mask_path is not None:
            if not Path(mask_path).exists():  # anything else there: read_mask says what it is
                raise DatasetError(f"{mask_path}: mask file missing for image {image_id}")
            mask = self.read_mask(image_id)
            if mask.shape != image.shape[:2]:
                raise DatasetError(f"{mask_path}: mask is {mask.shape[1]}×{mask.shape[0]} but image is "
                                   f"{image.shape[1]}×{image.shape[0]}")
        tags = self.tags_vector(self.tag_names(image_id), self.tags_source(image_id))
        saliency = None
        saliency_path = self.saliency_path(image_id)
        if saliency_path is not None and Path(saliency_path).is_file():
            saliency = read_gray01(saliency_path)
        return Sample(id=image_id, image=image, tags=tags, mask=mask, saliency=saliency)

    def tags_vector(self, names: list[str], where: str) -> np.ndarray:
        """Class names → C float32 multi-hot; DatasetError for names not in ``classes``."""
        index = {name: i for i, name in enumerate(self.classes)}
        vector = np.zeros(len(self.classes), dtype=np.float32)
        for name in names:
            if name not in index:
                raise DatasetError(
                    f"{where}: unknown class {name!r}; known classes: {', '.join(self.classes)}"
                )
            vector[index[name]] = 1.0
        return vector
