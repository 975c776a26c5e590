"""Image augmentation for the tag classifier: random resized crop, flip, colour jitter."""

from __future__ import annotations

import math

import cv2
import numpy as np


def random_resized_crop(
    image: np.ndarray, size: int, rng: np.random.Generator, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
    """Crop a random area share in ``scale`` and aspect ratio in ``ratio``, resize to size×size.

    image: H×W×3 uint8 → size×size×3 uint8.
    """
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            crop = image[y0 : y0 + ch, x0 : x0 + cw]
            return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength].

    image: H×W×3 uint8 → H×W×3 uint8.
    """
    x = image.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * rng.uniform(1 - strength, 1 + strength) + gray  # saturation
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The classifier's training augmentation: crop, horizontal flip (p = 0.5), colour jitter."""
    image = random_resized_crop(image, size, rng)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return color_jitter(image, rng)
