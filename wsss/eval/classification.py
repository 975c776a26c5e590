"""Multi-label classification metrics: mAP and per-class F1."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict:
    """scores: N×C probabilities in [0, 1]; targets: N×C in {0, 1}.

    Returns {"mAP": float, "AP": C list (NaN for a class with no positive), "F1": C list,
    "mean_F1": float}. F1 at ``threshold`` on the probabilities.
    """
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    targets = targets > 0.5
    ap = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        if targets[:, c].any():
            ap[c] = average_precision_score(targets[:, c], scores[:, c])
    predicted = scores >= threshold
    tp = (predicted & targets).sum(0)
    fp = (predicted & ~targets).sum(0)
    fn = (~predicted & targets).sum(0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    return {"mAP": float(np.nanmean(ap)), "AP": ap.tolist(), "F1": f1.tolist(), "mean_F1": float(np.nanmean(f1))}
