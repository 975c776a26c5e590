"""How sure the chain is of one image's pseudo-label: a summary per image for the review queue.

    confidence = label_confidence(tags, probs, refined, rule, labels)
    # {"tag_prob": 0.97, "map_support": 0.81, "map_outside": 0.12, "ignore_share": 0.01,
    #  "crf_changed": 0.03, "crf_changed_rel": 0.21, "ignore_rel": 0.05, "tags": 1, "score": 0.93}

Every labelling walk records it in the image's manifest entry (``wsss.writers.label_pngs``);
``wsss.eval.review`` ranks the images by ``score`` and measures how well it ranks their true
quality where masks exist.

- ``tag_prob``: the classifier's lowest sigmoid probability among the image's tags (a tag it
  does not believe in is a map it cannot make); None when the labels came from saved maps
  without probabilities.
- ``map_support``: the mean refined map (after PAMR, in [0, 1]) of each labelled class over the
  pixels labelled with it; how strongly the maps hold the foreground the label claims (0 when
  no pixel got a class).
- ``map_outside``: the largest share, over the image's tags, of the tag's refined map that lies
  outside the pixels labelled with it: the map saw the class where the label does not put it
  (an object of the class left out, or labelled as another class; 0 without tags).
- ``ignore_share``: the share of pixels labelled 255 (the rule's conflicts, and its margins).
- ``crf_changed``: the share of pixels whose label the CRF changed (0 without a CRF).
- ``crf_changed_rel``, ``ignore_rel``: the same, relative to the share of pixels labelled a class:
  an image's mIoU loses what its boundaries are unsure of in proportion to its objects' size,
  so 2 % of changed pixels is a small doubt on a large object and a large one on a small object.
- ``tags``: how many tags the image has (each a chance to confuse two classes).
- ``score``: the image's expected mIoU in [0, 1], from those fields by a linear model of
  −log(1.02 − mIoU) (``SCORE_WEIGHTS``) fitted once on the demo data's 1,105 pseudo-labels against
  their masks (December 7 2026; ``docs/results.md``) and checked on the colour-free variant's:
  Spearman ρ with the per-image mIoU 0.73 on the data it was fitted on, 0.79 on the other; the
  5 % least confident hold 53 % and 47 % of the 5 % worst labels (without ``map_outside``: ρ 0.69
  and 0.75, 47 % and 44 %; the first score, a product of the factors: ρ 0.39 and 0.40). No mask
  enters it at labelling time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from wsss.data.label_png import IGNORE_INDEX

__all__ = ["DOUBT", "SCORE_WEIGHTS", "doubt_mask", "expected_miou", "label_confidence"]


SCORE_WEIGHTS = {  # −log(1.02 − mIoU) ≈ Σ weight · feature + bias (least squares on the demo data)
    "log_crf_changed_rel": -0.2168,  # log(crf_changed_rel + 0.001)
    "log_ignore_rel": -0.0623,  # log(ignore_rel + 0.001)
    "map_support": 0.4656,
    "log_map_outside": -0.3787,  # log(map_outside + 0.001)
    "tag_prob": 0.1520,  # TAG_PROB_UNKNOWN when the labels came without probabilities
    "tags": -0.0827,
    "bias": 0.2346,
}
DOUBT = "doubt"  # a label folder's doubt/<id>.png: 1 where the confidence doubts the label (doubt_mask)
TAG_PROB_UNKNOWN = 0.97  # the demo's median lowest tag probability
DOUBT_MAP = 0.5  # a tag's refined map this strong where the label is not that class is doubted
MIN_FOREGROUND = 1e-4  # the relative shares' floor of the foreground share (an image labelled all background)


def expected_miou(c: dict) -> float:
    """The ``score`` of a confidence summary ``c`` (the module docstring's model), in [0, 1]."""
    w = SCORE_WEIGHTS
    tag_prob = TAG_PROB_UNKNOWN if c["tag_prob"] is None else c["tag_prob"]
    z = (w["log_crf_changed_rel"] * math.log(c["crf_changed_rel"] + 1e-3)
         + w["log_ignore_rel"] * math.log(c["ignore_rel"] + 1e-3) + w["map_support"] * c["map_support"]
         + w["log_map_outside"] * math.log(c["map_outside"] + 1e-3)
         + w["tag_prob"] * tag_prob + w["tags"] * c["tags"] + w["bias"])
    return min(1.0, max(0.0, 1.02 - math.exp(-z)))


def label_confidence(tags: np.ndarray, probs: Tensor | None, refined: Tensor, rule: Tensor, labels: Tensor) -> dict:
    """The confidence summary of one image.

    Args:
        tags: C multi-hot (the image's tags).
        probs: C sigmoid class probabilities of the classifier, or None.
        refined: C×H×W refined maps in [0, 1] (``ChainResult.refined[i]``).
        rule: H×W int64 labels of the label rule; labels: H×W int64 final labels (after the
            CRF when it ran; equal to ``rule`` otherwise).

    Returns:
        {"tag_prob", "map_support", "map_outside", "ignore_share", "crf_changed",
        "crf_changed_rel", "ignore_rel", "tags", "score"}: floats (``tag_prob`` None without
        ``probs``; ``tags`` an int), rounded to 4 decimals; ``score`` and the shares in [0, 1].
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
    outside = 0.0
    for c in present.tolist():  # the share of each tag's map outside its labelled pixels
        mass = float(refined[c].sum())
        if mass > 0:
            outside = max(outside, float(refined[c][labels != c + 1].sum()) / mass)
    ignore = float((labels == IGNORE_INDEX).float().mean())
    changed = float((labels != rule.detach().cpu()).float().mean())
    fg = max(float(foreground.float().mean()), MIN_FOREGROUND)
    values = {"tag_prob": tag_prob, "map_support": support, "map_outside": outside, "ignore_share": ignore,
              "crf_changed": changed, "crf_changed_rel": changed / fg, "ignore_rel": ignore / fg,
              "tags": int(len(present))}
    values["score"] = expected_miou(values)
    return {k: v if v is None or isinstance(v, int) else round(v, 4) for k, v in values.items()}


def doubt_mask(rule: Tensor, labels: Tensor, refined: Tensor, tags: np.ndarray) -> np.ndarray:
    """H×W bool: the pixels the confidence doubts: those the CRF relabelled, those left ignored
    (255), and those where a tag's refined map (``refined``: C×H×W in [0, 1]; ``tags``: C
    multi-hot) is at least ``DOUBT_MAP`` but the label is another class or background (what
    ``map_outside`` measures). What the review page marks (``wsss.writers.label_pngs`` saves it).
    rule, labels: H×W int64 as in ``label_confidence``."""
    labels = labels.detach().cpu()
    refined = refined.detach().float().cpu()
    doubt = (labels != rule.detach().cpu()) | (labels == IGNORE_INDEX)
    for c in np.flatnonzero(tags).tolist():
        doubt |= (refined[c] >= DOUBT_MAP) & (labels != c + 1)
    return doubt.numpy()
