"""The quality gate between the classifier and the labelling: a run whose classifier is near
chance stops before it writes a pseudo-label, and says what was measured and what to try.

    quality = classifier_quality(checkpoint, config.train.classifier.gate)   # None: unmeasured
    enforce_gate(quality, config.train.classifier.gate)                      # QualityGateError
"""

from __future__ import annotations

import os

from wsss.config import QualityGateConfig
from wsss.eval.classification import ClassifierQuality
from wsss.models.checkpoint import load_checkpoint

__all__ = ["QualityGateError", "classifier_quality", "enforce_gate"]

WHAT_TO_TRY = ("train longer (train.classifier.epochs), with a smaller learning rate and a warm-up "
               "(train.classifier.lr, train.classifier.warmup_epochs), start from pretrained weights (model.pretrained: "
               "a local file), or check the tags (wsss data check)")


class QualityGateError(ValueError):
    """The classifier is too close to chance for its maps to mean anything."""


def classifier_quality(checkpoint: str | os.PathLike, gate: QualityGateConfig) -> ClassifierQuality | None:
    """The gate's reading of the validation scores stored with a classifier.pt (its last epoch);
    None when the checkpoint holds none (no validation split, or written before wsss kept them)."""
    state = load_checkpoint(checkpoint)
    history = state.get("history") or []
    last = history[-1] if history else {}
    if "val_AP" not in last or "val_prevalence" not in last:
        return None
    return ClassifierQuality(list(state["classes"]), [float(a) for a in last["val_AP"]],
                             [float(p) for p in last["val_prevalence"]], gate.min_skill, gate.class_min_skill)


def enforce_gate(quality: ClassifierQuality | None, gate: QualityGateConfig) -> None:
    """Print what the gate measured; raise QualityGateError when the classifier is below
    ``gate.min_skill`` and ``gate.force`` is off."""
    if quality is None:
        print("quality gate: the classifier's validation scores are unknown (no validation split?): not checked")
        return
    print(f"quality gate: {quality.summary()}")
    if quality.passed:
        return
    if gate.force:
        print("quality gate: below the gate, going on because train.classifier.gate.force is set; "
              "its pseudo-labels are not to be trusted")
        return
    raise QualityGateError(
        f"the classifier is too close to chance to label anything: {quality.summary()}. The run stops before "
        f"writing pseudo-labels. Try: {WHAT_TO_TRY}; or set train.classifier.gate.force=true to go on anyway")
