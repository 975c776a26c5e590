"""wsss: weakly supervised semantic segmentation from image-level tags.

The small public API, imported lazily (so data-only commands do not pay for torch/timm):

    from wsss import getam, make_map_method, AttentionMapMethod, AttentionCapture, token_layout
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "getam": "wsss.attention",
    "make_map_method": "wsss.attention",
    "AttentionMapMethod": "wsss.attention",
    "AttentionCapture": "wsss.models.attention_capture",
    "token_layout": "wsss.models.vit_geometry",
    "pamr": "wsss.refine.pamr",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'wsss' has no attribute {name!r}")
