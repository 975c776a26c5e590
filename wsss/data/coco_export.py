"""Label PNGs → a COCO instances JSON, for annotation tools (FiftyOne, CVAT, ...).

    coco = labels_to_coco("runs/demo/pseudo_labels", dataset)             # one segment per 8-connected region
    coco = labels_to_coco(labels, dataset, per="class", min_area=20)      # one segment per class and image
    write_coco("labels.json", coco)                                       # atomically
    print(coco_summary(coco))

What is exported, and what is refused:

- The labels are ``LABEL_DIR/<id>.png`` (VOC-palette or 8-bit grayscale class indices:
  0 background, 1..C the data set's classes, 255 ignore); other files, subfolders and hidden
  temporary files (``.<name>.*.png``, left by an interrupted atomic write) are not read.
- Every label's id must be an image of the data set: a PNG whose id is not is an error naming
  it (ValueError, before anything is built). Images of the data set without a label PNG are
  not exported; ``info["wsss"]`` counts them and names the first few.
- A label PNG that cannot be read (empty, truncated, RGB-coloured, 16-bit), whose size differs
  from its image's (read from the image file's header), or that holds a value other than
  0..C and 255 is an error naming the file: nothing is skipped silently.
- ``images``: ids 1..M in the data set's order; ``file_name`` is the image file's path
  relative to the data set's images folder (``images_root``: FiftyOne's ``data_path``);
  width and height are the label's, which are the image's.
- ``categories``: ids 1..C, named after the data set's classes, supercategory "wsss".
- ``annotations``: for every image and every class present in its label, one segment per
  8-connected region of the class's pixels (``per="region"``) or one segment holding all of
  them (``per="class"``); ``segmentation`` a compressed RLE (``pycocotools.mask.encode``,
  counts as a str), ``area`` and ``bbox`` ([x, y, w, h]) from ``pycocotools.mask.area`` and
  ``toBbox``, ``iscrowd`` 0, ids 1..N. Background and ignore pixels are in no segment. Segments
  of fewer than ``min_area`` pixels are dropped (and counted). ``boxes_only`` leaves the
  ``segmentation`` out (for importers that take no RLE, such as label-studio-converter's).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wsss.data.base import Dataset
from wsss.data.images import stored_image_size
from wsss.data.label_png import IGNORE_INDEX, read_label_png
from wsss.files import write_json

__all__ = ["SEGMENTS_PER", "coco_summary", "images_root", "labels_to_coco", "write_coco"]

SEGMENTS_PER = ("region", "class")
SUPERCATEGORY = "wsss"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_ENCODE_CHUNK = 32  # segments encoded per pycocotools call (an H×W×k array each time)
_NAMED = 5  # how many ids a message or info["wsss"] names before "..."


def images_root(dataset: Dataset) -> Path:
    """The folder the exported ``file_name`` values are relative to, where the data set's own
    names are: ``images/`` of a plain folder set (the names of tags.csv), ``JPEGImages/`` of
    VOC, the images folder of a COCO set (its JSON's ``file_name``); for another kind of data
    set its ``images_root`` attribute when it has one, else the deepest folder holding every
    image file of the data set."""
    from wsss.data.coco import CocoDataset
    from wsss.data.folder import FolderDataset
    from wsss.data.voc import VocDataset

    if isinstance(dataset, FolderDataset):
        return dataset.root / "images"
    if isinstance(dataset, VocDataset):
        return dataset.root / "JPEGImages"
    if isinstance(dataset, CocoDataset):
        return dataset.root
    own = getattr(dataset, "images_root", None)
    if own is not None:
        return Path(own)
    parents = {os.fspath(Path(dataset.image_path(image_id)).parent) for image_id in dataset.ids}
    if not parents:
        raise ValueError("the data set has no images")
    return Path(os.path.commonpath(sorted(parents)))


def _label_files(label_dir: Path) -> dict[str, Path]:
    """{id: path} of the label PNGs directly in ``label_dir`` (hidden temporary files not)."""
    if not label_dir.is_dir():
        raise FileNotFoundError(f"{label_dir}: label folder not found")
    files = {path.stem: path for path in sorted(label_dir.glob("*.png"))
             if not path.name.startswith(".") and path.is_file()}
    if not files:
        raise ValueError(f"{label_dir}: no label PNGs (<id>.png) in this folder")
    return files


def _named(items: list[str]) -> str:
    return ", ".join(items[:_NAMED]) + (f", ... ({len(items)} in all)" if len(items) > _NAMED else "")


def _read_label(path: Path, image_id: str, dataset: Dataset, num_classes: int) -> np.ndarray:
    """The label map of ``path``, checked: readable, the size of its image, values 0..C or 255."""
    label = read_label_png(path)  # ImageReadError (a ValueError) naming the file when unreadable
    if label.size == 0:
        raise ValueError(f"{path}: empty label map (0×0)")
    image_path = dataset.image_path(image_id)
    size = stored_image_size(image_path)
    if size is None:
        raise ValueError(f"{image_path}: cannot read the size of image {image_id} (missing or not an image), "
                         f"needed to export {path}")
    if tuple(label.shape) != tuple(size):
        raise ValueError(f"{path}: label map is {label.shape[1]}×{label.shape[0]} but image {image_path} is "
                         f"{size[1]}×{size[0]}")
    values = np.unique(label)
    bad = [int(v) for v in values if v > num_classes and v != IGNORE_INDEX]
    if bad:
        raise ValueError(f"{path}: values {bad} are not classes (0 background, 1..{num_classes} the classes, "
                         f"{IGNORE_INDEX} ignore)")
    return label


def _segments(label: np.ndarray, per: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """[(class, component map, component ids)] of one label map: for every class present, the
    H×W int map whose pixels of component k hold k, and the ids to export (per class: the
    class's pixels are component 1)."""
    from scipy import ndimage

    found = []
    for value in np.unique(label):
        if value == 0 or value == IGNORE_INDEX:
            continue
        pixels = label == value
        if per == "class":
            found.append((int(value), pixels.astype(np.int32), np.array([1], dtype=np.int32)))
        else:
            components, count = ndimage.label(pixels, structure=_EIGHT_CONNECTED)
            found.append((int(value), components, np.arange(1, count + 1, dtype=np.int32)))
    return found


def _encode(components: np.ndarray, ids: np.ndarray) -> list[dict]:
    """Compressed RLEs (counts as str) of the components ``ids`` of a component map, with
    their areas and boxes: [{"segmentation", "area", "bbox"}]."""
    from pycocotools import mask as mask_utils

    encoded = []
    for start in range(0, len(ids), _ENCODE_CHUNK):
        chunk = ids[start:start + _ENCODE_CHUNK]
        masks = np.asfortranarray((components[:, :, None] == chunk[None, None, :]).astype(np.uint8))
        rles = mask_utils.encode(masks)
        areas = mask_utils.area(rles)
        boxes = mask_utils.toBbox(rles)
        for rle, area, box in zip(rles, areas, boxes):
            counts = rle["counts"]
            encoded.append({
                "segmentation": {"size": [int(s) for s in rle["size"]],
                                 "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts},
                "area": int(area),
                "bbox": [float(v) for v in box],
            })
    return encoded


def labels_to_coco(label_dir: str | os.PathLike, dataset: Dataset, per: str = "region", min_area: int = 0,
                   ids: Iterable[str] | None = None, boxes_only: bool = False) -> dict:
    """The COCO instances dict of the label PNGs in ``label_dir`` over ``dataset`` (see the
    module docstring for what is exported and what is refused).

    per: "region" (one annotation per 8-connected region of a class) or "class" (one per class
        present in an image).
    min_area: segments with fewer pixels are left out (0: none).
    ids: export only the labels of these images of the data set (e.g. one split); the labels of
        its other images are skipped and counted. None: every image of the data set.
    boxes_only: annotations without ``segmentation`` (bbox and area only).
    """
    if per not in SEGMENTS_PER:
        raise ValueError(f"per={per!r}: expected one of {', '.join(SEGMENTS_PER)}")
    if int(min_area) != min_area or min_area < 0:
        raise ValueError(f"min_area={min_area!r}: expected a whole number of pixels >= 0")
    label_dir = Path(label_dir)
    files = _label_files(label_dir)
    known = set(dataset.ids)
    unknown = [files[image_id].name for image_id in files if image_id not in known]
    if unknown:
        raise ValueError(f"{label_dir}: {len(unknown)} label PNG(s) whose id is not an image of the data set: "
                         f"{_named(unknown)}")
    wanted = list(dataset.ids) if ids is None else list(ids)
    outside = [image_id for image_id in wanted if image_id not in known]
    if outside:
        raise ValueError(f"ids not in the data set: {_named(outside)}")
    chosen = set(wanted)
    skipped = sorted(image_id for image_id in files if image_id not in chosen)
    root = images_root(dataset)
    images, annotations, without_label, dropped = [], [], [], 0
    for image_id in [i for i in dataset.ids if i in chosen]:
        if image_id not in files:
            without_label.append(image_id)
            continue
        label = _read_label(files[image_id], image_id, dataset, dataset.num_classes)
        coco_image_id = len(images) + 1
        image_file = Path(dataset.image_path(image_id))
        try:
            file_name = image_file.relative_to(root).as_posix()
        except ValueError:
            file_name = image_file.name
        images.append({"id": coco_image_id, "file_name": file_name,
                       "width": int(label.shape[1]), "height": int(label.shape[0])})
        for value, components, component_ids in _segments(label, per):
            for segment in _encode(components, component_ids):
                if segment["area"] < min_area:
                    dropped += 1
                    continue
                if boxes_only:
                    del segment["segmentation"]
                annotations.append({"id": len(annotations) + 1, "image_id": coco_image_id, "category_id": value,
                                    **segment, "iscrowd": 0})
    if not images:
        raise ValueError(f"{label_dir}: none of its {len(files)} label PNG(s) is of the {len(chosen)} image(s) "
                         f"chosen (e.g. {_named(sorted(chosen))}): nothing to export")
    info = {
        "description": f"wsss label maps from {label_dir}",
        "version": "1.0",
        "contributor": "wsss",
        "wsss": {
            "labels": os.fspath(label_dir),
            "images_root": os.fspath(root),
            "per": per,
            "min_area": int(min_area),
            "boxes_only": bool(boxes_only),
            "images_without_label": len(without_label),
            "first_without_label": without_label[:_NAMED],
            "labels_skipped": len(skipped),
            "segments_below_min_area": dropped,
        },
    }
    categories = [{"id": index + 1, "name": name, "supercategory": SUPERCATEGORY}
                  for index, name in enumerate(dataset.classes)]
    return {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def write_coco(path: str | os.PathLike, coco: dict) -> Path:
    """Write a COCO dict as JSON, atomically (whole or not at all); returns the path."""
    return write_json(path, coco)


def coco_summary(coco: dict) -> str:
    """Counts of an exported COCO dict, for people: images, annotations, and per class the
    annotations, the images holding it and its pixels."""
    notes = coco.get("info", {}).get("wsss", {})
    per_class = {c["id"]: [c["name"], 0, set(), 0] for c in coco["categories"]}
    for annotation in coco["annotations"]:
        row = per_class[annotation["category_id"]]
        row[1] += 1
        row[2].add(annotation["image_id"])
        row[3] += int(annotation["area"])
    lines = [f"images: {len(coco['images'])} exported"]
    if notes.get("images_without_label"):
        first = ", ".join(notes.get("first_without_label", []))
        more = ", ..." if notes["images_without_label"] > len(notes.get("first_without_label", [])) else ""
        lines[0] += f"; {notes['images_without_label']} image(s) of the data set had no label PNG ({first}{more})"
    if notes.get("labels_skipped"):
        lines[0] += f"; {notes['labels_skipped']} label PNG(s) of other images skipped"
    how = {"region": "one per 8-connected region of a class", "class": "one per class and image"}.get(
        notes.get("per"), "")
    line = f"annotations: {len(coco['annotations'])}" + (f" ({how})" if how else "")
    if notes.get("segments_below_min_area"):
        line += f"; {notes['segments_below_min_area']} segment(s) under {notes['min_area']} pixels left out"
    lines.append(line)
    width = max([len("class")] + [len(name) for name, *_ in per_class.values()])
    lines.append(f"{'class':<{width}}  annotations  images      pixels")
    for name, count, holders, pixels in per_class.values():
        lines.append(f"{name:<{width}}  {count:>11}  {len(holders):>6}  {pixels:>10}")
    return "\n".join(lines)
