"""Refinement of class maps into pseudo-labels: PAMR, the label rule, dense CRF.

    from wsss.refine import pamr, pseudo_labels, start_crf_label_maps, start_crf_pseudo_labels

``pamr`` is imported eagerly: the package attribute must be the function, and a lazy export
would be shadowed by the submodule of the same name once it is imported. The CRF functions
are imported on first use.
"""

from __future__ import annotations

import importlib

from wsss.refine.label_rule import pseudo_labels
from wsss.refine.pamr import pamr

_LAZY = {
    "start_crf_label_maps": "wsss.refine.crf",
    "start_crf_pseudo_labels": "wsss.refine.crf",
}

__all__ = ["pamr", "pseudo_labels", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsss.refine' has no attribute {name!r}")
