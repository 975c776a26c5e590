"""How sure the chain is of one image's pseudo-label: a summary per image for the review queue.

    confidence = label_confidence(tags, probs, refined, rule, labels)
    # {"tag_prob": 0.97, "map_support": 0.81, "ignore_share": 0.12, "crf_changed": 0.03, "score": 0.68}

Every labelling walk records it in the image's manifest entry (``wsss.writers.label_pngs``);
``wsss.eval.review`` ranks the images by ``score`` and measures how well it ranks their true
quality where masks exist.

- ``tag_prob``: the classifier's lowest sigmoid probability among the image's tags (a tag it
  does not believe in is a map it cannot make); None when the labels came from saved maps
  without probabilities.
- ``map_support``: the mean refined map (after PAMR, in [0, 1]) of each labelled class over the
  pixels labelled with it; how strongly the maps hold the foreground the label claims (0 when
  no pixel got a class).
- ``ignore_share``: the share of pixels labelled 255 (the rule's conflicts, and its margins).
- ``crf_changed``: the share of pixels whose label the CRF changed (0 without a CRF).
- ``score`` = (tag_prob, or 1 when unknown) · map_support · (1 − ignore_share) · (1 − crf_changed):
  each factor is a reason to doubt the label, and one doubt is enough to put an image first.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from wsss.data.label_png import IGNORE_INDEX

__all__ = ["label_confidence"]


def label_confidence(tags: np.ndarray, probs: Tensor | None, refined: Tensor, rule: Tensor, labels: Tensor) -> dict:
    """The confidence summary of one image.

    Args:
        tags: C multi-hot (the image's tags).
        probs: C sigmoid class probabilities of the classifier, or None.
        refined: C×H×W refined maps in [0, 1] (``ChainResult.refined[i]``).
        rule: H×W int64 labels of the label rule; labels: H×W int64 final labels (after the
            CRF when it ran; equal to ``rule`` otherwise).

    Returns:
        {"tag_prob", "map_support", "ignore_share", "crf_changed", "score"}: floats in [0, 1]
        (``tag_prob`` None without ``probs``), rounded to 4 decimals.
    """
    present = np.flatnonzero(tags)
    tag_prob = None
    if probs is not None and len(present):
        tag_prob = float(probs.detach().float().cpu()[torch.as_tensor(present)].min())
    labels = labels.detach().cpu()
    refined = refined.detach().float().cpu()
    foreground = (labels > 0) & (labels != IGNORE_INDEX)
    if foreground.any():
        classes = (labels[foreground] - 1).long()
        support = float(refined[:, foreground].gather(0, classes[None]).mean())
    else:
        support = 0.0
    ignore = float((labels == IGNORE_INDEX).float().mean())
    changed = float((labels != rule.detach().cpu()).float().mean())
    score = (1.0 if tag_prob is None else tag_prob) * support * (1.0 - ignore) * (1.0 - changed)
    values = {"tag_prob": tag_prob, "map_support": support, "ignore_share": ignore, "crf_changed": changed,
              "score": score}
    return {k: None if v is None else round(v, 4) for k, v in values.items()}
