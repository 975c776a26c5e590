"""The review queue: the pseudo-labels the chain is least sure of, first.

    queue = review_queue(RUN/pseudo_labels, dataset, count=24)
    queue.ids                     # the 24 least confident images, least first
    queue.correlation["score"]    # Spearman's ρ of the confidence score with per-image mIoU

A person checking thousands of pseudo-labels starts with these. The confidence is what the
labelling walk recorded in each image's manifest entry (``wsss.refine.confidence``). Where the
data set has masks, each labelled image's own mIoU (over the classes in its mask or its label)
is measured too, and the rank correlation of every confidence field with it says how well the
confidence finds the bad labels (ρ = 1: it ranks them exactly; 0: no better than chance).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from wsss.data.base import Dataset
from wsss.data.label_png import read_label_png
from wsss.data.dataset_walk import MANIFEST
from wsss.eval.confusion import ConfusionMatrix

__all__ = ["ReviewQueue", "read_confidences", "review_queue", "per_image_miou"]

FIELDS = ("score", "tag_prob", "map_support", "map_outside", "ignore_share", "crf_changed", "crf_changed_rel",
          "ignore_rel", "tags")
WORST_SHARE = 0.05  # worst_found: how many of this share of worst labels are among as many least confident


@dataclass
class ReviewQueue:
    """ids: the least confident images (least first); confidence: {id: summary} of every
    labelled image with one; miou: {id: its own mIoU in [0, 1]} where masks exist (else None);
    correlation: {field: Spearman's ρ with the per-image mIoU} (None without masks; a field
    that is missing or constant is left out); worst_found: the share of the WORST_SHARE worst
    labels (lowest mIoU) that are among as many least confident (1: the queue's head holds every
    one of them; None without masks)."""

    ids: list[str]
    confidence: dict[str, dict]
    miou: dict[str, float] | None
    correlation: dict[str, float] | None
    worst_found: float | None = None

    def to_dict(self) -> dict:
        return {"images": len(self.confidence), "least_confident": self.ids,
                "rank_correlation": self.correlation, "worst_found": self.worst_found,
                "confidence": {i: self.confidence[i] for i in self.ids},
                "miou": None if self.miou is None else {i: self.miou.get(i) for i in self.ids}}

    def summary(self) -> str:
        if not self.confidence:
            return "review queue: no image has a recorded confidence"
        line = f"review queue: {len(self.ids)} least confident of {len(self.confidence)} labelled images"
        if self.correlation and "score" in self.correlation:
            line += (f"; the confidence score ranks their true quality with Spearman ρ = "
                     f"{self.correlation['score']:.2f} against per-image mIoU")
        if self.worst_found is not None:
            line += (f"; the {WORST_SHARE:.0%} least confident hold {self.worst_found:.0%} of the {WORST_SHARE:.0%} "
                     "worst labels")
        return line


def read_confidences(label_dir: str | os.PathLike) -> dict[str, dict]:
    """{id: confidence} from LABEL_DIR/manifest.jsonl (the latest "ok" entry of each id that
    has one: labels written before confidences were recorded have none)."""
    path = Path(label_dir) / MANIFEST
    found: dict[str, dict] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a hard stop
        if entry.get("status") == "ok" and isinstance(entry.get("confidence"), dict):
            found[entry["id"]] = entry["confidence"]
        elif entry.get("status") == "failed":
            found.pop(entry.get("id"), None)
    return found


def per_image_miou(label_dir: str | os.PathLike, dataset: Dataset, ids: list[str]) -> dict[str, float]:
    """{id: mIoU of LABEL_DIR/<id>.png against its mask} over the classes present in either
    (255 in the mask not scored); images without a readable mask or label, or with a value that is
    not a class in either, are left out."""
    scores = {}
    for image_id in ids:
        mask_path = dataset.mask_path(image_id)
        try:
            gt = read_label_png(mask_path)
            pred = read_label_png(Path(label_dir) / f"{image_id}.png")
            if pred.shape != gt.shape:
                continue
            matrix = ConfusionMatrix(dataset.num_classes + 1).update(pred, gt)  # ValueError: a value not a class
        except (OSError, ValueError, TypeError):
            continue
        value = matrix.miou
        if np.isfinite(value):
            scores[image_id] = float(value)
    return scores


def review_queue(label_dir: str | os.PathLike, dataset: Dataset, count: int = 24) -> ReviewQueue:
    """The ``count`` least confident labelled images of ``dataset`` in LABEL_DIR, and (where the
    data set has masks) how well the confidence ranks the per-image mIoU."""
    confidence = {i: c for i, c in read_confidences(label_dir).items() if i in set(dataset.ids)}
    ranked = sorted(confidence, key=lambda i: (confidence[i].get("score") or 0.0, i))
    miou = correlation = worst_found = None
    if confidence and any(dataset.mask_path(i) is not None for i in list(confidence)[:1]):
        miou = per_image_miou(label_dir, dataset, list(confidence))
        correlation = {}
        scored = [i for i in confidence if i in miou]
        truth = np.array([miou[i] for i in scored])
        for name in FIELDS:
            values = [confidence[i].get(name) for i in scored]
            if len(scored) < 3 or any(v is None for v in values) or np.ptp(values) == 0 or np.ptp(truth) == 0:
                continue
            rho = spearmanr(values, truth).statistic
            correlation[name] = round(float(rho), 4)
        worst_found = _worst_found([i for i in ranked if i in miou], miou)
    return ReviewQueue(ranked[:count], confidence, miou, correlation, worst_found)


def _worst_found(ranked: list[str], miou: dict[str, float]) -> float | None:
    """The share of the WORST_SHARE lowest-mIoU images among as many first of ``ranked`` (least
    confident first); None with fewer than 1 / WORST_SHARE images."""
    k = int(len(ranked) * WORST_SHARE)
    if k < 1:
        return None
    worst = set(sorted(ranked, key=lambda i: (miou[i], i))[:k])
    return round(len(worst & set(ranked[:k])) / k, 4)
