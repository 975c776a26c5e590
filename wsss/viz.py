"""Pictures: heat-map overlays, label overlays, image grids."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsss.data.label_png import IGNORE_INDEX, colorize


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured heat map onto an image.

    image: H×W×3 uint8 RGB; heat: H×W float in [0, 1] (values outside are clipped).
    Returns H×W×3 uint8 RGB.
    """
    heat = np.nan_to_num(np.clip(heat, 0.0, 1.0))
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return (image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)


def label_overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a label map's VOC colours onto an image (background and ignore stay visible).

    image: H×W×3 uint8 RGB; label: H×W uint8. Returns H×W×3 uint8 RGB.
    """
    colour = colorize(label).astype(np.float32)
    weight = np.where((label > 0) & (label != IGNORE_INDEX), alpha, 0.0)[:, :, None]
    weight = np.where((label == IGNORE_INDEX)[:, :, None], 0.35, weight)
    return (image.astype(np.float32) * (1 - weight) + colour * weight).astype(np.uint8)


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an H×W×3 (or H×W) uint8 array as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
