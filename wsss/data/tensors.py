"""Images as model inputs: normalisation and resizing shared by training, maps and inference."""

from __future__ import annotations

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB → 3×H×W float32, ImageNet-normalised."""
    x = torch.tensor(image).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """H×W×3 uint8 image (or H×W float map, e.g. saliency) → size×size (or h×w), the one
    resize rule of wsss: INTER_AREA when shrinking either side, bilinear otherwise."""
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    shrink = h < image.shape[0] or w < image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
