"""Label maps as PNG files: the PASCAL VOC colour palette, 255 = ignore.

A label map is an H×W uint8 array: 0 = background, 1..C = foreground classes,
255 = ignore. It is stored as a palette ("P" mode) PNG, so viewers show colours while
the pixel values stay class indices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.images import decoded_image
from wsss.files import atomic_path

IGNORE_INDEX = 255
MAX_CLASSES = IGNORE_INDEX - 1  # foreground labels 1..254: more classes than this do not fit (data sets refuse them)


def voc_palette() -> np.ndarray:
    """The VOC colour map: 256×3 uint8, entry i is the RGB colour of class i (255 is cream)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


_PALETTE = voc_palette()


def colorize(label: np.ndarray) -> np.ndarray:
    """H×W uint8 label map → H×W×3 uint8 RGB image in VOC colours."""
    return _PALETTE[label]


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write an H×W uint8 label map as a VOC-palette PNG, atomically (temporary file + rename)."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map for {path} must be H×W, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.min() < 0 or label.max() > 255:
            raise ValueError(f"label map for {path} has values outside 0..255")
        label = label.astype(np.uint8)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    image.putpalette(_PALETTE.flatten().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an H×W bool (or 0/1) mask atomically as an 8-bit grayscale PNG: 255 where set,
    0 elsewhere (saliency and foreground maps, which any saliency folder reads back)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(mask).astype(bool).astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (palette or 8-bit grayscale) → H×W uint8 class indices.

    Raises ValueError naming the file when it is not a single-channel 8-bit label map
    (an RGB-coloured mask, a 16-bit PNG), not a PNG at all (JPEG bytes named .png: lossy
    compression changes the class indices along every edge), cannot be decoded, or is over
    PIL's pixel limit.
    """
    path = Path(path)
    with decoded_image(path, "label map") as image:
        if image.format != "PNG":
            raise ValueError(f"{path}: {image.format or 'unknown'} data, not a PNG: a label map must be a lossless "
                             "PNG of class indices (lossy compression changes the values along every edge)")
        if image.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: a label map must be a palette (P) or 8-bit grayscale (L) PNG of class "
                f"indices, got mode {image.mode!r}"
            )
        return np.array(image, dtype=np.uint8)


def values_not_classes(label: np.ndarray, num_classes: int) -> list[int]:
    """The values of an H×W uint8 label map that are neither 0..``num_classes`` (background and
    the classes) nor 255 (ignore), ascending; empty when every value is one."""
    counts = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    return [value for value in np.flatnonzero(counts).tolist() if num_classes < value != IGNORE_INDEX]


def check_label_values(label: np.ndarray, num_classes: int, path: str | os.PathLike, what: str = "label map") -> None:
    """ValueError naming ``path`` and its values that are not classes (``values_not_classes``)."""
    bad = values_not_classes(label, num_classes)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"{path}: {what} holds value(s) {shown} that are not classes (expected 0..{num_classes} "
                         f"for background and the {num_classes} classes, or {IGNORE_INDEX} for ignore)")
