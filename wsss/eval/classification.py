"""Multi-label classification metrics (mAP, per-class AP and F1) and the quality gate that
stops a run whose classifier is near chance.

The AP of scores that know nothing is the class's prevalence p (the share of images tagged
with it), so a class's *skill* is (AP − p) / (1 − p): 0 at chance, 1 when perfect. The gate
compares the mean skill with ``train.classifier.gate.min_skill`` and names every class whose
skill is below ``gate.class_min_skill`` (the classifier cannot tell it apart).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict:
    """scores: N×C probabilities in [0, 1]; targets: N×C in {0, 1}.

    Returns {"mAP": float, "AP": C list (NaN for a class with no positive), "F1": C list,
    "mean_F1": float, "prevalence": C list (share of positives)}. F1 at ``threshold`` on
    the probabilities.
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
    return {"mAP": float(np.nanmean(ap)), "AP": ap.tolist(), "F1": f1.tolist(), "mean_F1": float(np.nanmean(f1)),
            "prevalence": targets.mean(0).tolist()}


@dataclass
class ClassifierQuality:
    """The gate's reading of a classifier's validation scores (C classes).

    ap, prevalence: per class (NaN AP for a class without a positive); skill: (AP − p)/(1 − p)
    per class; weak: the classes below ``class_min_skill``; passed: mean skill ≥ ``min_skill``.
    """

    classes: list[str]
    ap: list[float]
    prevalence: list[float]
    min_skill: float
    class_min_skill: float

    @property
    def skill(self) -> list[float]:
        return [float("nan") if np.isnan(a) or p >= 1 else (a - p) / (1 - p) for a, p in zip(self.ap, self.prevalence)]

    @property
    def mean_ap(self) -> float:
        return float(np.nanmean(self.ap))

    @property
    def chance_map(self) -> float:
        """The mAP of scores that know nothing: the mean prevalence (of the classes with an AP)."""
        return float(np.mean([p for a, p in zip(self.ap, self.prevalence) if not np.isnan(a)]))

    @property
    def mean_skill(self) -> float:
        return float(np.nanmean(self.skill))

    @property
    def weak(self) -> list[str]:
        return [name for name, k in zip(self.classes, self.skill) if not np.isnan(k) and k < self.class_min_skill]

    @property
    def passed(self) -> bool:
        return self.mean_skill >= self.min_skill

    def summary(self) -> str:
        """What was measured, in one paragraph (and what the weak classes are)."""
        text = (f"classifier on the validation split: mAP {self.mean_ap:.3f} against {self.chance_map:.3f} for "
                f"scores that know nothing (each class's prevalence); skill (AP − prevalence)/(1 − prevalence) "
                f"{self.mean_skill:.2f}, the gate asks for {self.min_skill:.2f}")
        if self.weak:
            text += (f"; classes it cannot tell apart (skill below {self.class_min_skill:.2f}): "
                     + ", ".join(f"{name} (AP {self.ap[self.classes.index(name)]:.2f}, prevalence "
                                 f"{self.prevalence[self.classes.index(name)]:.2f})" for name in self.weak))
        return text

    def to_dict(self) -> dict:
        return {"mAP": self.mean_ap, "chance_mAP": self.chance_map, "skill": self.mean_skill,
                "min_skill": self.min_skill, "passed": self.passed, "weak_classes": self.weak,
                "AP": dict(zip(self.classes, _none_for_nan(self.ap))),
                "prevalence": dict(zip(self.classes, self.prevalence)),
                "class_skill": dict(zip(self.classes, _none_for_nan(self.skill)))}


def _none_for_nan(values: list[float]) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]
