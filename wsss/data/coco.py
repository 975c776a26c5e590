"""The COCO format: a folder of images and an instances JSON (``instances_train2017.json``).

    IMAGES/                   data.root: the images; ``file_name`` of the JSON is relative to it
                              (sub-folders allowed, no '..', not absolute)
    instances_<split>.json    data.coco_annotations: images, annotations, categories

Classes are the JSON's categories sorted by category id (label i+1 = the i-th); their names must
be unique. An image's id is the stem of its file name (two images with one stem are an error).
Tags are the categories of the image's annotations (crowd annotations included) whose ``area``
is at least ``min_area`` (``data.coco_min_area``; 0: every annotation). An image without
annotations has no tags: walks that need tags skip it (its manifest entry says so) and
``wsss data check`` reports it.

Masks are rasterised from the annotations on reading (polygons, uncompressed and compressed
RLE): 0 background; a pixel covered by non-crowd instances of one category → that category's
label; covered by instances of two or more categories → 255; crowd regions → 255. ``min_area``
does not change masks (the ground truth stays the data set's). The JSON's width and height must
be the image file's (as read, EXIF orientation applied), and an RLE's ``size`` the JSON's.

One JSON is one split, named after the JSON's stem. ``open_dataset`` reads
``data.coco_annotations`` (images in ``data.root``) for the training split and for
``split`` None, and ``data.coco_val_annotations`` (images in ``data.coco_val_root``, else
``data.root``) for ``data.val_split`` when it is set.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from wsss.data.base import Dataset, DatasetError
from wsss.data.images import stored_image_size
from wsss.data.label_png import IGNORE_INDEX, MAX_CLASSES

__all__ = ["CocoDataset", "compressed_rle_total"]


class CocoDataset(Dataset):
    """A COCO instances JSON over a folder of images (see the module docstring).

    root: the folder the JSON's ``file_name`` entries are relative to.
    annotations: the instances JSON (read with ``pycocotools.coco.COCO``).
    min_area: tags only from annotations whose ``area`` is at least this (pixels).
    saliency_dir: folder of <id>.png saliency maps, or None.
    unannotated: images with no annotation at all: "skip" (not in ``ids``; listed in
    ``self.unannotated``) or "keep" (in ``ids``, without tags: every walk fails them).
    """

    def __init__(self, root: str | os.PathLike, annotations: str | os.PathLike, min_area: float = 0.0,
                 saliency_dir: str | os.PathLike | None = None, unannotated: str = "skip"):
        self.root = Path(root)
        self.annotations = Path(annotations)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: COCO images folder not found")
        if not self.annotations.is_file():
            raise DatasetError(f"{self.annotations}: COCO annotations file not found")
        self.min_area = float(min_area)
        self.split = self.annotations.stem
        coco = _read_coco(self.annotations)
        where = self.annotations
        categories = sorted(coco.cats.values(), key=lambda c: c["id"])
        names = [c["name"] for c in categories]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DatasetError(f"{where}: duplicate category names {duplicates} (class names must be unique)")
        if "background" in names:
            raise DatasetError(f"{where}: a category named 'background': background is implicit (label 0)")
        if not names:
            raise DatasetError(f"{where}: no categories")
        if len(names) > MAX_CLASSES:
            raise DatasetError(f"{where}: {len(names)} categories; a label PNG holds at most {MAX_CLASSES} classes "
                               f"(8-bit: 0 is background, 1..{MAX_CLASSES} the classes, 255 ignore)")
        self.classes = names
        self._label = {c["id"]: i + 1 for i, c in enumerate(categories)}  # category id → label
        self._images: dict[str, dict] = {}  # id → the JSON's image entry
        self._anns: dict[str, list[dict]] = {}
        for image in coco.dataset["images"]:
            name = image["file_name"]
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise DatasetError(f"{where}: image {image['id']} file_name {name!r} is outside the images folder "
                                   "(names are relative to it, without '..')")
            image_id = Path(name).stem
            if image_id in self._images:
                raise DatasetError(f"{where}: {self._images[image_id]['file_name']} and {name} share the id "
                                   f"{image_id!r} (outputs are <id>.png); rename one of them")
            self._images[image_id] = image
            self._anns[image_id] = coco.imgToAnns.get(image["id"], [])
        if unannotated not in ("skip", "keep"):
            raise DatasetError(f"data.coco_unannotated={unannotated!r}: expected skip or keep")
        self.unannotated = sorted(i for i, anns in self._anns.items() if not anns)
        self.ids = [i for i in self._images if unannotated == "keep" or self._anns[i]]
        saliency = Path(saliency_dir) if saliency_dir is not None else None
        self._saliency_dir = saliency if saliency is not None and saliency.is_dir() else None

    def left_out(self) -> dict[str, str]:
        """The images skipped for having no annotation (``unannotated: skip``)."""
        if set(self.unannotated) <= set(self.ids):
            return {}
        return {i: "no annotation in the JSON (data.coco_unannotated=skip)" for i in self.unannotated}

    def index_files(self) -> list[Path]:
        return [self.annotations, *super().index_files()]

    def image_path(self, image_id: str) -> Path:
        return self.root / self._images[image_id]["file_name"]

    def mask_path(self, image_id: str) -> Path:
        """The annotations JSON: masks are rasterised from it (``read_mask``)."""
        return self.annotations

    def saliency_path(self, image_id: str) -> Path | None:
        return None if self._saliency_dir is None else self._saliency_dir / f"{image_id}.png"

    def tags_source(self, image_id: str) -> str:
        return f"{self.annotations} (image {image_id})"

    def tag_names(self, image_id: str) -> list[str]:
        """The categories of the image's annotations (crowd ones too) with area ≥ min_area, in class order."""
        labels: set[int] = set()
        for ann in self._anns[image_id]:
            if self.min_area > 0 and self._area(image_id, ann) < self.min_area:
                continue
            labels.add(self._label[ann["category_id"]])
        return [self.classes[label - 1] for label in sorted(labels)]

    def read_mask(self, image_id: str) -> np.ndarray:
        """The H×W uint8 semantic label map of ``image_id`` rasterised from its annotations
        (module docstring); DatasetError naming the JSON when an annotation is malformed or
        the sizes disagree."""
        image = self._images[image_id]
        height, width = image["height"], image["width"]
        path = self.image_path(image_id)
        stored = stored_image_size(path)
        if stored is None:
            raise DatasetError(f"{self.annotations}: image {image_id}: {path} is missing or unreadable, "
                               "so its mask's size cannot be checked")
        if stored != (height, width):
            raise DatasetError(f"{self.annotations}: image {image_id} is {width}×{height} in the JSON but "
                               f"{stored[1]}×{stored[0]} in {path}")
        owner = np.zeros((height, width), dtype=np.int16)  # 0 none, label, or -1: two categories
        crowd = np.zeros((height, width), dtype=bool)
        for ann in self._anns[image_id]:
            pixels = self._instance_mask(image_id, ann)
            if ann.get("iscrowd", 0):
                crowd |= pixels
                continue
            label = self._label[ann["category_id"]]
            free = pixels & (owner == 0)
            owner[free] = label
            owner[pixels & (owner > 0) & (owner != label)] = -1
        mask = owner.astype(np.uint8)
        mask[(owner < 0) | crowd] = IGNORE_INDEX
        return mask

    def _where(self, image_id: str, ann: dict) -> str:
        return f"{self.annotations}: image {image_id}, annotation {ann.get('id', '?')}"

    def _area(self, image_id: str, ann: dict) -> float:
        area = ann.get("area")
        if area is None:  # not in the JSON: the mask's pixel count
            return float(self._instance_mask(image_id, ann).sum())
        if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area):
            raise DatasetError(f"{self._where(image_id, ann)}: area {area!r} is not a number")
        return float(area)

    def _instance_mask(self, image_id: str, ann: dict) -> np.ndarray:
        """H×W bool pixels of one annotation: polygons, or an RLE (list or string counts)."""
        from pycocotools import mask as mask_utils

        image = self._images[image_id]
        height, width = image["height"], image["width"]
        where = self._where(image_id, ann)
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            polygons = [_checked_polygon(p, height, width, where) for p in segmentation]
            if not polygons:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(segmentation, dict):
            size, counts = segmentation.get("size"), segmentation.get("counts")
            if not (isinstance(size, (list, tuple)) and len(size) == 2 and list(size) == [height, width]):
                raise DatasetError(f"{where}: RLE size {size!r} is not the image's [height, width] "
                                   f"[{height}, {width}]")
            if isinstance(counts, list):
                if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2 ** 32 for c in counts):
                    raise DatasetError(f"{where}: uncompressed RLE counts must be non-negative integers")
                if sum(counts) != height * width:
                    raise DatasetError(f"{where}: uncompressed RLE counts sum to {sum(counts)}, not "
                                       f"{height}×{width} = {height * width}")
                rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
            elif isinstance(counts, (str, bytes)):
                data = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
                total = compressed_rle_total(data)
                if total != height * width:
                    raise DatasetError(f"{where}: compressed RLE counts " + (
                        "are malformed" if total is None else f"cover {total} pixels, not {height}×{width}"))
                rle = {"size": [height, width], "counts": data}
            else:
                raise DatasetError(f"{where}: RLE counts must be a list of integers or a string, got "
                                   f"{type(counts).__name__}")
        else:
            raise DatasetError(f"{where}: segmentation must be polygons (a list) or an RLE (a dict with size and "
                               f"counts), got {type(segmentation).__name__}")
        return mask_utils.decode(rle).astype(bool)


def _checked_polygon(polygon, height: int, width: int, where: str) -> list[float]:
    """One polygon [x1, y1, x2, y2, ...] as floats; DatasetError unless it has ≥ 3 finite points
    near the image (pycocotools would read 4 numbers as a box and trusts coordinates blindly)."""
    if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
        raise DatasetError(f"{where}: a polygon must be a list of at least 3 x, y pairs, got {polygon!r:.80}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
        raise DatasetError(f"{where}: polygon coordinates must be numbers")
    values = [float(v) for v in polygon]
    xs, ys = values[0::2], values[1::2]
    margin = max(height, width)
    if not all(math.isfinite(v) for v in values) or min(xs) < -margin or max(xs) > width + margin \
            or min(ys) < -margin or max(ys) > height + margin:
        raise DatasetError(f"{where}: polygon coordinates far outside the {width}×{height} image")
    return values


def compressed_rle_total(data: bytes) -> int | None:
    """The pixel count a COCO compressed RLE string covers (the sum of its run lengths), or None
    when it is malformed (a character outside '0'..'o', a truncated or negative run, a run over
    2^32). Checked before pycocotools decodes it, which writes that many pixels unchecked."""
    runs: list[int] = []
    position, n = 0, len(data)
    while position < n:
        value, shift, more = 0, 0, True
        while more:
            if position >= n or shift > 35:
                return None
            c = data[position] - 48
            if not 0 <= c < 64:
                return None
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            position += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if not 0 <= value < 2 ** 32:
            return None
        runs.append(value)
    return sum(runs)


def _read_coco(path: Path):
    """The JSON indexed by ``pycocotools.coco.COCO`` (quietly), after the checks that give its
    problems a name: DatasetError for unparsable JSON or malformed images, categories, annotations."""
    from pycocotools.coco import COCO

    try:
        with path.open(encoding="utf-8-sig") as handle:  # a byte-order mark at the start is dropped
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the COCO annotations JSON ({error})") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: no {key!r} list (a COCO instances file has images, annotations, categories)")
    annotations = data.setdefault("annotations", [])
    if not isinstance(annotations, list):
        raise DatasetError(f"{path}: 'annotations' must be a list")

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    image_ids: set = set()
    for index, image in enumerate(data["images"]):
        if not (isinstance(image, dict) and integer(image.get("id")) and isinstance(image.get("file_name"), str)
                and image["file_name"].strip() and integer(image.get("width")) and integer(image.get("height"))
                and image["width"] > 0 and image["height"] > 0):
            raise DatasetError(f"{path}: images[{index}] needs an integer id, a file_name and positive integer "
                               f"width and height, got {image!r:.120}")
        if image["id"] in image_ids:
            raise DatasetError(f"{path}: image id {image['id']} listed twice")
        image_ids.add(image["id"])
    category_ids: set = set()
    for index, category in enumerate(data["categories"]):
        if not (isinstance(category, dict) and integer(category.get("id")) and isinstance(category.get("name"), str)
                and category["name"].strip()):
            raise DatasetError(f"{path}: categories[{index}] needs an integer id and a name, got {category!r:.120}")
        if category["id"] in category_ids:
            raise DatasetError(f"{path}: category id {category['id']} listed twice")
        category_ids.add(category["id"])
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DatasetError(f"{path}: annotations[{index}] is not an object")
        name = f"annotation {ann.get('id', f'[{index}]')}"
        if not integer(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise DatasetError(f"{path}: {name} refers to image {ann.get('image_id')!r}, not in images")
        if not integer(ann.get("category_id")) or ann["category_id"] not in category_ids:
            raise DatasetError(f"{path}: {name} has category {ann.get('category_id')!r}, not in categories")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DatasetError(f"{path}: {name} has iscrowd {ann.get('iscrowd')!r} (0 or 1 expected)")
        ann.setdefault("id", f"[{index}]")  # COCO's index keys annotations by id
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        coco.createIndex()
    return coco
