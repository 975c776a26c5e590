"""Attention maps from ViT classifiers: GETAM and baselines on one interface."""

from wsss.attention.base import AttentionMapMethod, MapInputs
from wsss.attention.baselines import (
    MAP_METHODS,
    AttentionRollout,
    GradientRelevance,
    LastBlockAttention,
    PatchGradCAM,
    make_map_method,
)
from wsss.attention.getam import GETAM, getam
from wsss.attention.views import MultiViewMaps, check_map_settings, configured_map_method

__all__ = [
    "AttentionMapMethod",
    "MapInputs",
    "GETAM",
    "getam",
    "LastBlockAttention",
    "AttentionRollout",
    "GradientRelevance",
    "PatchGradCAM",
    "MAP_METHODS",
    "make_map_method",
    "MultiViewMaps",
    "configured_map_method",
    "check_map_settings",
]
