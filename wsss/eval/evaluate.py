"""Scoring predictions against a data set's masks: label PNGs, or raw maps with a threshold sweep.

Label maps: OUT/<id>.png (VOC palette, 0 = background, 1..C, 255 = ignore), as written by
``wsss pseudo-label`` and ``wsss predict``. Raw maps: OUT/maps/<id>.npz as written by
``wsss cam`` (per tagged class, normalised to [0, 1]); they are scored the usual WSSS way:
background = a constant threshold t, label = argmax over [t, maps], best t reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.data.npz_maps import read_npz_maps
from wsss.data.base import Dataset, DatasetError
from wsss.data.label_png import check_label_values, read_label_png
from wsss.data.size_limit import resize_label, working_size
from wsss.eval.confusion import ConfusionMatrix

DEFAULT_THRESHOLDS = (0.01, 0.02, 0.03, 0.04, *np.round(np.arange(0.05, 0.96, 0.05), 2))
NO_PREDICTION, NO_MAPS = "no prediction", "no maps"  # the reasons of an image that has no output to score
SHOWN_FAILURES = 20  # unusable files listed one a line by the summary


@dataclass
class Evaluation:
    """A confusion matrix plus the images that could not be scored (id → reason)."""

    confusion: ConfusionMatrix
    missing: dict[str, str] = field(default_factory=dict)
    threshold: float | None = None  # the chosen background threshold for raw maps

    def summary(self, class_names: list[str]) -> str:
        lines = [self.confusion.table(class_names)]
        if self.threshold is not None:
            lines.append(f"best background threshold: {self.threshold:.2f}")
        absent = [k for k, v in self.missing.items() if v in (NO_PREDICTION, NO_MAPS)]
        if absent:
            lines.append(f"not scored: {len(absent)} image(s) without a prediction, e.g. {', '.join(absent[:3])}")
        failed = self.failed
        if failed:  # a file that is there but bad: each one named, with what is wrong
            lines.append(f"not scored: {len(failed)} image(s) whose prediction or mask is unusable:")
            lines += [f"  {k}: {v}" for k, v in list(failed.items())[:SHOWN_FAILURES]]
            if len(failed) > SHOWN_FAILURES:
                lines.append(f"  ... and {len(failed) - SHOWN_FAILURES} more")
        return "\n".join(lines)

    @property
    def failed(self) -> dict[str, str]:
        """The images not scored because a file is unusable (id → reason): not those without a prediction."""
        return {k: v for k, v in self.missing.items() if v not in (NO_PREDICTION, NO_MAPS)}

    def to_dict(self, class_names: list[str]) -> dict:
        names = ["background", *class_names]
        return {
            "mIoU": self.confusion.miou,
            "pixel_accuracy": self.confusion.pixel_accuracy,
            "IoU": dict(zip(names, _nan_to_none(self.confusion.iou))),
            "precision": dict(zip(names, _nan_to_none(self.confusion.precision))),
            "recall": dict(zip(names, _nan_to_none(self.confusion.recall))),
            "threshold": self.threshold,
            "not_scored": len(self.missing),
            "unusable": self.failed,
        }


def _nan_to_none(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in values]


def _ground_truth(dataset: Dataset, image_id: str) -> np.ndarray:
    """The mask of ``image_id``; ValueError naming the file when a value is not a class."""
    path = dataset.mask_path(image_id)
    if path is None:
        raise DatasetError(f"{dataset.root if hasattr(dataset, 'root') else 'data set'}: no masks to evaluate against")
    mask = dataset.read_mask(image_id)
    check_label_values(mask, dataset.num_classes, path, "mask")
    return mask


def _prediction(path: Path, num_classes: int) -> np.ndarray:
    """The label PNG at ``path``; ValueError naming it when a value is not a class."""
    label = read_label_png(path)
    check_label_values(label, num_classes, path, "prediction")
    return label


def evaluate_label_dir(pred_dir: str | os.PathLike, dataset: Dataset, progress: bool = True,
                       ids: list[str] | None = None) -> Evaluation:
    """Score PRED_DIR/<id>.png against the masks of every image of ``dataset`` (or of ``ids``).

    A missing or unreadable prediction or mask, one holding a value that is not a class, or a
    prediction of another size, is recorded in ``missing`` with the reason (naming the file and
    the value) and not scored: the other images are; a data set without masks raises DatasetError.
    """
    pred_dir = Path(pred_dir)
    result = Evaluation(ConfusionMatrix(dataset.num_classes + 1))
    for image_id in tqdm(dataset.ids if ids is None else ids, desc="evaluating", unit="img", disable=not progress):
        path = pred_dir / f"{image_id}.png"
        if not path.is_file():
            result.missing[image_id] = NO_PREDICTION
            continue
        try:
            gt, pred = _ground_truth(dataset, image_id), _prediction(path, dataset.num_classes)
        except FileNotFoundError as error:
            result.missing[image_id] = f"no mask ({error.filename or error})"
            continue
        except (ValueError, OSError) as error:  # an unreadable prediction or mask: not scored, said why
            if isinstance(error, DatasetError) and dataset.mask_path(image_id) is None:
                raise
            result.missing[image_id] = f"{type(error).__name__}: {error}"
            continue
        if pred.shape != gt.shape:
            result.missing[image_id] = f"{path}: prediction {pred.shape} vs mask {gt.shape} (height, width)"
            continue
        result.confusion.update(pred, gt)
    return result


def labels_from_maps(maps: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """K×H×W maps in [0, 1] of classes (K indices into 0..C-1) → H×W label, background where
    no map exceeds ``threshold``."""
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[1:], np.uint8)
    best = maps.argmax(0)
    label = (np.asarray(classes)[best] + 1).astype(np.uint8)
    label[maps.max(0) <= threshold] = 0
    return label


def sweep_map_thresholds(
    maps_dir: str | os.PathLike, dataset: Dataset, thresholds=DEFAULT_THRESHOLDS, progress: bool = True
) -> tuple[Evaluation, dict[float, float]]:
    """Score MAPS_DIR/<id>.npz at every background threshold; return the best Evaluation and
    {threshold: mIoU}. Maps of an image over the data set's ``max_side`` (saved at the reduced
    size, ``wsss.data.size_limit``) are scored against its mask shrunk the same way (nearest)."""
    maps_dir = Path(maps_dir)
    matrices = {t: ConfusionMatrix(dataset.num_classes + 1) for t in thresholds}
    missing: dict[str, str] = {}
    for image_id in tqdm(dataset.ids, desc="threshold sweep", unit="img", disable=not progress):
        path = maps_dir / f"{image_id}.npz"
        if not path.is_file():
            missing[image_id] = NO_MAPS
            continue
        try:
            maps, classes = read_npz_maps(path)
            gt = _ground_truth(dataset, image_id)
        except (ValueError, OSError) as error:
            if isinstance(error, DatasetError) and dataset.mask_path(image_id) is None:
                raise
            missing[image_id] = f"{type(error).__name__}: {error}"
            continue
        if dataset.max_side is not None and maps.shape[1:] == working_size(*gt.shape, dataset.max_side):
            gt = resize_label(gt, maps.shape[1:])  # maps of a shrunk image
        if maps.shape[1:] != gt.shape:
            missing[image_id] = f"maps {maps.shape[1:]} vs mask {gt.shape}"
            continue
        for t, matrix in matrices.items():
            matrix.update(labels_from_maps(maps, classes, t), gt)
    curve = {float(t): m.miou for t, m in matrices.items()}
    best = max(curve, key=lambda t: -1.0 if np.isnan(curve[t]) else curve[t])
    return Evaluation(matrices[best], missing, threshold=best), curve
