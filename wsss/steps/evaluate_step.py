"""The evaluate step: a folder of label PNGs (pseudo-labels, predictions), or of raw maps, scored
against the masks of a data set.

    scores = evaluate_folder(config, "runs/demo/pseudo_labels", "train", json_path=...)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.eval.evaluate import evaluate_label_dir, sweep_map_thresholds
from wsss.files import write_json
from wsss.steps.label_plan import has_masks

__all__ = ["evaluate_folder", "prediction_folder"]

EXPECTED = "<id>.png label maps, or a wsss cam output with maps/<id>.npz"  # what a prediction folder holds


def evaluate_folder(config: Config, pred: str | os.PathLike, split: str | None,
                    json_path: str | os.PathLike | None = None, progress: bool = True,
                    require_predictions: bool = False) -> dict:
    """Score ``pred/<id>.png`` against the masks of ``config.data`` / ``split`` (None: every
    image); a ``wsss cam`` folder (maps/<id>.npz, no PNG) is scored at its best background
    threshold (the sweep is printed and kept as "threshold_curve"). Prints the summary (every
    prediction or mask that is unusable named with its reason) and a warning for predictions of
    ids that are not in the data set or split (counted as "not_in_dataset"); writes the scores to
    ``json_path`` when given. Returns the scores (``Evaluation.to_dict``, mIoU etc. as fractions)
    plus "images", the data set's size. ValueError when ``pred`` is not a folder, when the data
    set has no masks, and (``require_predictions``, as ``wsss evaluate`` asks) when ``pred``
    holds no prediction of any of its images."""
    pred = prediction_folder(pred)
    dataset = open_dataset(config.data, split)
    if not has_masks(dataset):
        raise ValueError(f"{config.data.root} (split {split or 'all'}): no masks to evaluate against")
    raw_maps = (pred / "maps").is_dir() and not any(pred.glob("*.png"))
    found = {p.stem for p in (pred / "maps" if raw_maps else pred).glob("*.npz" if raw_maps else "*.png")
             if not p.name.startswith(".")}  # a hidden one is a temporary file of an interrupted write
    extra = sorted(found - set(dataset.ids))
    if require_predictions and found and len(extra) == len(found):
        raise ValueError(f"{pred}: none of its {len(found)} prediction(s) is of an image of {config.data.root} (split "
                         f"{split or 'all'}), e.g. {', '.join(extra[:3])}: is it the data set and split they were "
                         "made for?")
    if require_predictions and not found:
        raise ValueError(f"{pred}: no predictions in it (expected {EXPECTED})")
    if extra:
        print(f"warning: {pred}: {len(extra)} prediction(s) of ids not in {config.data.root} (split {split or 'all'}), "
              f"not scored: {', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}", file=sys.stderr)
    curve = None
    if raw_maps:
        result, curve = sweep_map_thresholds(pred / "maps", dataset, progress=progress)
        print("background threshold sweep (raw maps): " + "  ".join(f"{t:.2f}:{100 * v:.1f}" for t, v in curve.items()))
    else:
        result = evaluate_label_dir(pred, dataset, progress=progress)
    print(result.summary(dataset.classes))
    scores = {**result.to_dict(dataset.classes), "images": len(dataset), "not_in_dataset": len(extra)}
    if curve is not None:
        scores["threshold_curve"] = {str(t): v for t, v in curve.items()}
    if json_path is not None:
        write_json(json_path, scores)
    return scores


def prediction_folder(pred: str | os.PathLike) -> Path:
    """``pred`` as a Path; ValueError naming it when it is missing or not a folder."""
    pred = Path(pred)
    if not pred.exists():
        raise ValueError(f"{pred}: no such folder (expected a folder of {EXPECTED})")
    if not pred.is_dir():
        raise ValueError(f"{pred}: a file, not a folder (expected a folder of {EXPECTED})")
    return pred
