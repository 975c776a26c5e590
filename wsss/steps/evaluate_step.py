"""The evaluate step: a folder of label PNGs (pseudo-labels, predictions), or of raw maps, scored
against the masks of a data set.

    scores = evaluate_folder(config, "runs/demo/pseudo_labels", "train", json_path=...)
"""

from __future__ import annotations

import os
from pathlib import Path

from wsss.config import Config
from wsss.data import open_dataset
from wsss.eval.evaluate import evaluate_label_dir, sweep_map_thresholds
from wsss.files import write_json
from wsss.steps.label_plan import has_masks

__all__ = ["evaluate_folder"]


def evaluate_folder(config: Config, pred: str | os.PathLike, split: str | None,
                    json_path: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Score ``pred/<id>.png`` against the masks of ``config.data`` / ``split`` (None: every
    image); a ``wsss cam`` folder (maps/<id>.npz, no PNG) is scored at its best background
    threshold (the sweep is printed and kept as "threshold_curve"). Prints the summary; writes the
    scores to ``json_path`` when given. Returns the scores (``Evaluation.to_dict``, mIoU etc. as
    fractions) plus "images", the data set's size. ValueError when the data set has no masks."""
    pred = Path(pred)
    dataset = open_dataset(config.data, split)
    if not has_masks(dataset):
        raise ValueError(f"{config.data.root} (split {split or 'all'}): no masks to evaluate against")
    curve = None
    if (pred / "maps").is_dir() and not any(pred.glob("*.png")):
        result, curve = sweep_map_thresholds(pred / "maps", dataset, progress=progress)
        print("background threshold sweep (raw maps): " + "  ".join(f"{t:.2f}:{100 * v:.1f}" for t, v in curve.items()))
    else:
        result = evaluate_label_dir(pred, dataset, progress=progress)
    print(result.summary(dataset.classes))
    scores = {**result.to_dict(dataset.classes), "images": len(dataset)}
    if curve is not None:
        scores["threshold_curve"] = {str(t): v for t, v in curve.items()}
    if json_path is not None:
        write_json(json_path, scores)
    return scores
