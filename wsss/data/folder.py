"""The plain folder format.

    DATASET/
      classes.txt      foreground class names, one per line (label i+1 = line i; at most 254)
      tags.csv         header ``image,tags``; image = file name inside images/;
                       tags = class names separated by ';'
      images/          the images (jpg, png, ...); the id of an image is its file stem
      masks/           optional: <id>.png label maps (0 background, 1..C, 255 ignore)
      saliency/        optional: <id>.png grayscale saliency maps, any size
      splits/          optional: <split>.txt, one id per line (e.g. train.txt, val.txt)
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from wsss.data.base import Dataset, DatasetError, read_text_file
from wsss.data.label_png import MAX_CLASSES

CLASSES_FILE = "classes.txt"
TAGS_FILE = "tags.csv"


def read_classes(path: Path) -> list[str]:
    """classes.txt → list of names; DatasetError for a missing file, blanks, duplicates, or more
    than the 254 classes a label PNG holds."""
    if not path.is_file():
        raise DatasetError(f"{path}: classes file not found (one class name per line expected)")
    names = [line.strip() for line in read_text_file(path, "class list (one name a line)").splitlines()]
    names = [name for name in names if name]
    if not names:
        raise DatasetError(f"{path}: no class names")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DatasetError(f"{path}: duplicate class names {duplicates}")
    if "background" in names:
        raise DatasetError(f"{path}: 'background' is implicit (label 0); list foreground classes only")
    if len(names) > MAX_CLASSES:
        raise DatasetError(f"{path}: {len(names)} classes; a label PNG holds at most {MAX_CLASSES} (8-bit: 0 is "
                           f"background, 1..{MAX_CLASSES} the classes, 255 ignore)")
    return names


def read_tags_csv(path: Path) -> dict[str, tuple[str, list[str]]]:
    """tags.csv → {id: (image file name, [tag names])}; DatasetError on a malformed file."""
    if not path.is_file():
        raise DatasetError(f"{path}: tags file not found (CSV with header 'image,tags' expected)")
    entries: dict[str, tuple[str, list[str]]] = {}
    with io.StringIO(read_text_file(path, "tags file (CSV: image,tags)"), newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"image", "tags"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: header must have columns 'image' and 'tags', got {reader.fieldnames}")
        for line_number, row in enumerate(reader, start=2):
            if row.get(None):  # more fields than the header: tags separated by ',' instead of ';'
                fields = [row["image"], row["tags"], *row[None]]
                raise DatasetError(
                    f"{path}:{line_number}: {len(fields)} fields ({','.join(str(f) for f in fields)}), expected 2 "
                    f"(image,tags): separate tags with ';' (e.g. {fields[0]},{';'.join(str(f) for f in fields[1:])}), "
                    "or quote the field")
            name = (row["image"] or "").strip()
            if not name:
                raise DatasetError(f"{path}:{line_number}: empty image name")
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise DatasetError(f"{path}:{line_number}: image {name!r} is outside the data set's images/ folder "
                                   "(names are relative to images/, without '..')")
            image_id = Path(name).stem
            if image_id in entries:
                raise DatasetError(f"{path}:{line_number}: image id {image_id!r} listed twice")
            tags = [tag.strip() for tag in (row["tags"] or "").split(";") if tag.strip()]
            entries[image_id] = (name, tags)
    return entries


class FolderDataset(Dataset):
    """A data set in the plain folder format (see the module docstring).

    split: name of a file in splits/ restricting the ids, or None for every image in tags.csv.
    saliency_dir: saliency folder to use instead of DATASET/saliency.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, saliency_dir: str | os.PathLike | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: data set folder not found")
        self.classes = read_classes(self.root / CLASSES_FILE)
        self._entries = read_tags_csv(self.root / TAGS_FILE)
        ids = list(self._entries)
        if split is not None:
            split_file = self.root / "splits" / f"{split}.txt"
            if not split_file.is_file():
                available = sorted(p.stem for p in (self.root / "splits").glob("*.txt"))
                raise DatasetError(f"{split_file}: split {split!r} not found; available: {available}")
            wanted = self.read_split(split_file)
            unknown = [i for i in wanted if i not in self._entries]
            if unknown:
                raise DatasetError(f"{split_file}: ids not in {TAGS_FILE}: {unknown[:5]}")
            ids, self.split_file = wanted, split_file
        self.ids = ids
        self.split = split
        masks = self.root / "masks"
        self._mask_dir = masks if masks.is_dir() else None
        saliency = Path(saliency_dir) if saliency_dir is not None else self.root / "saliency"
        self._saliency_dir = saliency if saliency.is_dir() else None

    def index_files(self) -> list[Path]:
        return [self.root / CLASSES_FILE, self.root / TAGS_FILE, *super().index_files()]

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / self._entries[image_id][0]

    def mask_path(self, image_id: str) -> Path | None:
        return None if self._mask_dir is None else self._mask_dir / f"{image_id}.png"

    def saliency_path(self, image_id: str) -> Path | None:
        return None if self._saliency_dir is None else self._saliency_dir / f"{image_id}.png"

    def tag_names(self, image_id: str) -> list[str]:
        return list(self._entries[image_id][1])

    def tags_source(self, image_id: str) -> str:
        return f"{self.root / TAGS_FILE} (image {image_id})"


def write_folder_dataset_index(
    root: str | os.PathLike,
    classes: list[str],
    tags: dict[str, list[str]],
    splits: dict[str, list[str]] | None = None,
) -> None:
    """Write classes.txt, tags.csv and splits/*.txt of a folder data set.

    tags: {image file name inside images/: [class names]}.
    splits: {split name: [ids]}.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / CLASSES_FILE).write_text("\n".join(classes) + "\n", encoding="utf-8")
    with (root / TAGS_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "tags"])
        for name, names in tags.items():
            writer.writerow([name, ";".join(names)])
    for split, ids in (splits or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")


