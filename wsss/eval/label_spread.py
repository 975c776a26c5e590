"""Classes whose pseudo-labels spread over the background, found without masks.

A class whose maps light up its usual surroundings (water for boats, street for cars, the
texture a generator paints behind one shape) gets labels that cover most of every image it is
tagged in. Two signs, read from the label PNGs and the tags alone:

- **everywhere**: in at least ``FULL_IMAGES`` of the images tagged with it, the class covers
  at least ``FULL_SHARE`` of the image, whatever the image shows;
- **far above the others**: its mean share of the images tagged with it is at least
  ``RATIO`` times the median class's, and at least ``MIN_SHARE``.

``label_coverage`` measures (one read of each PNG: what the labels cover overall and per
class), ``spreading_classes`` names the classes and what to try.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss.data.base import Dataset
from wsss.data.label_png import IGNORE_INDEX, read_label_png

__all__ = ["class_shares", "label_coverage", "spreading_classes", "FULL_SHARE", "FULL_IMAGES", "RATIO", "MIN_SHARE"]

FULL_SHARE = 0.7  # a class "covers the image" at this share of its pixels
FULL_IMAGES = 0.5  # ... in at least this share of the images tagged with it: it spreads everywhere
RATIO = 2.5  # a mean share this many times the median class's ...
MIN_SHARE = 0.3  # ... and at least this: far above the other classes
MIN_TAGGED = 5  # classes tagged in fewer labelled images are not judged

WHAT_TO_TRY = ("look at its labels in review.html; raise refine.label.alpha (a darker background, e.g. 48) or "
               "refine.label.tau, give saliency maps (refine.saliency.source: folder) or pretrained weights "
               "(wsss init --weights), or add images where the class appears without its usual surroundings")


def label_coverage(label_dir: str | os.PathLike, dataset: Dataset, ids: list[str]) -> tuple[dict, dict[str, dict]]:
    """What the label PNGs of ``ids`` in ``label_dir`` cover (those that exist; each read once),
    measurable without masks: (shares, per class).

    shares: ``images`` (PNGs read) and the share of all their pixels labelled a class
    (``foreground``), ``background`` and ``ignore`` (255). Per class name, over the images tagged
    with it: ``images`` (count), ``mean_share`` (mean share of an image's labelled pixels, ignore
    left out, that carry the class) and ``full_images`` (share of those images where it covers at
    least FULL_SHARE).
    """
    counts = np.zeros(3, dtype=np.int64)  # foreground, background, ignore
    images = 0
    per_class: dict[int, list[float]] = {c: [] for c in range(len(dataset.classes))}
    for image_id in ids:
        path = Path(label_dir) / f"{image_id}.png"
        if not path.is_file():
            continue
        label = read_label_png(path)
        ignore, background = int((label == IGNORE_INDEX).sum()), int((label == 0).sum())
        counts += (label.size - ignore - background, background, ignore)
        images += 1
        counted = max(label.size - ignore, 1)
        present = dataset.tags_vector([n for n in dataset.tag_names(image_id) if n in dataset.classes], "")
        for c in np.flatnonzero(present):
            per_class[int(c)].append(float((label == c + 1).sum()) / counted)
    total = max(int(counts.sum()), 1)
    shares = {"images": images, "foreground": counts[0] / total, "background": counts[1] / total,
              "ignore": counts[2] / total}
    classes = {dataset.classes[c]: {"images": len(values),
                                    "mean_share": round(float(np.mean(values)), 4) if values else None,
                                    "full_images": round(float(np.mean(np.array(values) >= FULL_SHARE)), 4)
                                    if values else None}
               for c, values in per_class.items()}
    return shares, classes


def class_shares(label_dir: str | os.PathLike, dataset: Dataset, ids: list[str]) -> dict[str, dict]:
    """The per-class part of :func:`label_coverage`."""
    return label_coverage(label_dir, dataset, ids)[1]


def spreading_classes(shares: dict[str, dict]) -> list[dict]:
    """The classes of ``class_shares`` that spread (module docstring), each {class, why, try}."""
    judged = {name: s for name, s in shares.items() if s["images"] >= MIN_TAGGED}
    if not judged:
        return []
    median = float(np.median([s["mean_share"] for s in judged.values()]))
    found = []
    for name, s in judged.items():
        reasons = []
        if s["full_images"] >= FULL_IMAGES:
            reasons.append(f"covers at least {FULL_SHARE:.0%} of the image in {s['full_images']:.0%} of the "
                           f"{s['images']} images tagged with it")
        if s["mean_share"] >= MIN_SHARE and s["mean_share"] >= RATIO * median:
            reasons.append(f"labels {s['mean_share']:.0%} of the images tagged with it, {s['mean_share'] / median:.1f}× "
                           f"the median class's {median:.0%}")
        if reasons:
            found.append({"class": name, "why": "; ".join(reasons), "try": WHAT_TO_TRY})
    return found
