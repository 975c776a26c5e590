"""``wsss data check``: read every image, tag, mask and saliency map of a data set and report.

Errors (the data set cannot be used as is; exit status 1): unreadable or truncated images,
missing image files, unknown class names, images with no tags, missing or unreadable masks,
masks whose size differs from the image, mask values that are not classes, classes that
never occur. Warnings (reported; an error only with ``strict``): conversions applied on
reading (grayscale, alpha, 16-bit), tags that disagree with the mask, missing saliency maps,
files in images/ that tags.csv does not list, ids listed twice in a split file (kept once), and
(``check_splits``) ids in both the training and the validation split.
When masks exist, the trivial baseline of ``wsss.data.trivial_baseline`` is scored too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.config import DataConfig
from wsss.data import open_dataset
from wsss.data.base import Dataset, DatasetError
from wsss.data.folder import FolderDataset
from wsss.data.images import IMAGE_EXTENSIONS, ImageNotes, ImageReadError, read_gray01, read_rgb
from wsss.data.label_png import IGNORE_INDEX, values_not_classes
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.trivial_baseline import trivial_baseline_label


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    where: str  # the file or image id
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.where}: {self.message}"


@dataclass
class CheckReport:
    """What ``check_dataset`` found. counts are per class index 0..C-1."""

    classes: list[str]
    num_images: int = 0
    problems: list[Problem] = field(default_factory=list)
    tagged_images: np.ndarray | None = None  # C int: images tagged with the class
    mask_images: np.ndarray | None = None  # C int: images whose mask holds the class
    mask_pixels: np.ndarray | None = None  # C+1 int: pixels per label (0 = background)
    tags_per_image: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)  # (w, h) → images
    with_mask: int = 0
    with_saliency: int = 0
    max_side: int | None = None  # the data set's size limit (``data.max_side``)
    over_max_side: int = 0  # images whose longer side is over it (computed at a reduced size)
    trivial_baseline: object | None = None  # ConfusionMatrix when masks exist

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def ok(self, strict: bool = False) -> bool:
        return not self.errors and not (strict and self.warnings)

    def summary(self) -> str:
        """A fixed-width text summary: totals, then one row per class."""
        lines = [
            f"images: {self.num_images}   with mask: {self.with_mask}   with saliency: {self.with_saliency}   "
            f"errors: {len(self.errors)}   warnings: {len(self.warnings)}",
        ]
        if self.sizes:
            widths = [w for w, _ in self.sizes.elements()]
            heights = [h for _, h in self.sizes.elements()]
            lines.append(f"image sizes: width {min(widths)}..{max(widths)}, height {min(heights)}..{max(heights)}")
        if self.over_max_side:
            lines.append(f"{self.over_max_side} image(s) over data.max_side={self.max_side}: maps and labels are computed "
                         f"at a reduced size and written at the image's size (data.oversize=refuse fails them)")
        if self.tags_per_image:
            spread = ", ".join(f"{k}: {v}" for k, v in sorted(self.tags_per_image.items()))
            lines.append(f"tags per image: {spread}")
        name_width = max([10] + [len(c) for c in self.classes])
        lines.append("")
        lines.append(f"{'class':<{name_width}}  {'tagged':>7}  {'in mask':>7}  {'pixels %':>8}")
        total_pixels = int(self.mask_pixels.sum()) if self.mask_pixels is not None else 0
        if self.mask_pixels is not None and total_pixels:
            share = 100.0 * self.mask_pixels[0] / total_pixels
            lines.append(f"{'background':<{name_width}}  {'':>7}  {'':>7}  {share:8.2f}")
        for index, name in enumerate(self.classes):
            tagged = int(self.tagged_images[index])
            in_mask = int(self.mask_images[index]) if self.with_mask else "-"
            share = f"{100.0 * self.mask_pixels[index + 1] / total_pixels:8.2f}" if total_pixels else f"{'-':>8}"
            lines.append(f"{name:<{name_width}}  {tagged:>7}  {in_mask!s:>7}  {share}")
        if self.trivial_baseline is not None:
            lines.append("")
            lines.append(
                "trivial baseline (every non-background-coloured pixel → the image's tag): "
                f"mIoU {100 * self.trivial_baseline.miou:.1f}%, pixel accuracy {100 * self.trivial_baseline.pixel_accuracy:.1f}%"
            )
        return "\n".join(lines)


def check_dataset(dataset: Dataset, progress: bool = True) -> CheckReport:
    """Read every sample of ``dataset`` and collect problems and statistics."""
    num_classes = len(dataset.classes)
    report = CheckReport(classes=list(dataset.classes), num_images=len(dataset.ids), max_side=dataset.max_side)
    report.tagged_images = np.zeros(num_classes, dtype=np.int64)
    report.mask_images = np.zeros(num_classes, dtype=np.int64)
    report.mask_pixels = np.zeros(num_classes + 1, dtype=np.int64)
    confusion = ConfusionMatrix(num_classes + 1)
    class_index = {name: i for i, name in enumerate(dataset.classes)}

    def problem(severity: str, where, message: str) -> None:
        report.problems.append(Problem(severity, str(where), message))

    for where, message in dataset.read_warnings:  # e.g. an id listed twice in the split file
        problem("warning", where, message)
    left_out = dataset.left_out()
    if left_out:
        examples = ", ".join(list(left_out)[:5])
        problem("warning", dataset.tags_source(next(iter(left_out))).split(" (")[0],
                f"{len(left_out)} image(s) left out: {next(iter(left_out.values()))} (e.g. {examples})")
    for image_id in tqdm(dataset.ids, desc="checking", unit="img", disable=not progress):
        image = None
        path = dataset.image_path(image_id)
        if not Path(path).exists():
            problem("error", path, "image file missing")
        else:
            notes = ImageNotes()
            try:
                image = read_rgb(path, notes)
                report.sizes[(image.shape[1], image.shape[0])] += 1
                report.over_max_side += dataset.max_side is not None and max(image.shape[:2]) > dataset.max_side
            except ImageReadError as error:  # its cause: PIL's error; without one: not a regular file
                problem("error", path, f"unreadable or truncated image ({error.__cause__})" if error.__cause__
                        else str(error).removeprefix(f"{path}: "))
            for conversion in notes.conversions:
                problem("warning", path, conversion)

        tags = None
        try:
            names = dataset.tag_names(image_id)
        except DatasetError as error:
            problem("error", image_id, str(error))
            names = None
        if names is not None:
            unknown = [n for n in names if n not in class_index]
            for name in unknown:
                problem("error", image_id, f"unknown class {name!r} (known: {', '.join(dataset.classes)})")
            if not names:
                problem("error", image_id, "no tags: every image needs at least one class tag")
            tags = np.zeros(num_classes, dtype=np.float32)
            for name in names:
                if name in class_index:
                    tags[class_index[name]] = 1.0
            report.tagged_images += tags.astype(np.int64)
            report.tags_per_image[int(tags.sum())] += 1

        mask_path = dataset.mask_path(image_id)
        if mask_path is not None:
            mask = _check_mask(mask_path, image, num_classes, problem, lambda: dataset.read_mask(image_id))
            if mask is not None:
                report.with_mask += 1
                counts = np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=num_classes + 1)
                report.mask_pixels += counts[: num_classes + 1]
                present = counts[1 : num_classes + 1] > 0
                report.mask_images += present
                if tags is not None and names and not np.array_equal(present, tags > 0):
                    in_mask = [dataset.classes[i] for i in np.flatnonzero(present)]
                    problem("warning", image_id, f"tags {sorted(names)} differ from the mask's classes {sorted(in_mask)}")
                if image is not None and tags is not None and tags.any():
                    confusion.update(trivial_baseline_label(image, tags), mask)

        saliency_path = dataset.saliency_path(image_id)
        if saliency_path is not None:
            if not Path(saliency_path).is_file():
                problem("warning", saliency_path, "saliency map missing")
            else:
                try:
                    read_gray01(saliency_path)
                    report.with_saliency += 1
                except ImageReadError as error:
                    problem("error", saliency_path, str(error))

    for index, name in enumerate(dataset.classes):
        if report.tagged_images[index] == 0 and report.mask_images[index] == 0:
            problem("error", name, "class never occurs (no image is tagged with it)")
    if isinstance(dataset, FolderDataset):
        listed = {Path(dataset.image_path(i)).name for i in dataset.ids}
        folder = dataset.root / "images"
        if dataset.split is None and folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in IMAGE_EXTENSIONS and path.name not in listed:
                    problem("warning", path, "image not listed in tags.csv (ignored)")
    if report.with_mask:
        report.trivial_baseline = confusion
    return report


def check_splits(data: DataConfig) -> list[Problem]:
    """Warnings on ``data.train_split`` and ``data.val_split`` themselves: ids listed twice in
    either split file (kept once), and images in both (the same image file): scores on the
    validation split are then not held out. Only for the layouts with split files (folder, VOC,
    the demo set); nothing when a split is unset or not there."""
    if data.format not in ("folder", "voc", "synth") or not data.train_split or not data.val_split \
            or data.train_split == data.val_split:
        return []
    try:
        train, val = open_dataset(data, data.train_split), open_dataset(data, data.val_split)
    except DatasetError:  # no such split (a folder without splits/): nothing to compare
        return []
    problems = [Problem("warning", where, message) for where, message in (*train.read_warnings, *val.read_warnings)]
    trained = {Path(train.image_path(image_id)) for image_id in train.ids}
    both = [image_id for image_id in val.ids if Path(val.image_path(image_id)) in trained]
    if both:
        problems.append(Problem(
            "warning", str(val.split_file or data.root),
            f"{len(both)} id(s) in both the training split {data.train_split!r} and the validation split "
            f"{data.val_split!r} ({', '.join(both[:10])}{', …' if len(both) > 10 else ''}): scores on "
            f"{data.val_split!r} are not held out"))
    return problems


def _check_mask(mask_path, image, num_classes: int, problem, read) -> np.ndarray | None:
    """Read (``read()``: the data set's ``read_mask``) and validate one mask; report problems;
    return it (H×W uint8) or None."""
    if not Path(mask_path).is_file():
        problem("error", mask_path, "mask file missing")
        return None
    try:
        mask = read()
    except ValueError as error:
        problem("error", mask_path, str(error).split(": ", 1)[-1])
        return None
    except OSError as error:
        problem("error", mask_path, f"unreadable mask ({error})")
        return None
    if image is not None and mask.shape != image.shape[:2]:
        problem(
            "error", mask_path,
            f"mask is {mask.shape[1]}×{mask.shape[0]} but the image is {image.shape[1]}×{image.shape[0]}",
        )
        return None
    bad = values_not_classes(mask, num_classes)
    if bad:
        problem("error", mask_path, f"values {bad[:10]} are not classes (expected 0..{num_classes} or 255)")
        return None
    return mask
