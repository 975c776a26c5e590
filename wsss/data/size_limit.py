"""The maximum image side of every walk over a data set (``data.max_side``, ``data.oversize``).

A photo of 6000×4000 costs a ViT minutes and gigabytes per image and gains a pseudo-label
nothing a 1024 px version lacks. So the runner (``wsss.data.dataset_walk``) hands a walk's compute
an image whose longer side is at most ``max_side``:

    sample, note = fit_max_side(sample, max_side=1024, oversize="resize")
    ...                                   # maps, labels at the working size (≤ 1024 px)
    write_label_png(path, at_source_size(label, sample))   # back to 6000×4000, nearest

``oversize: resize`` shrinks the image (INTER_AREA), its saliency map (the same) and its mask
(nearest) by one factor and records the file's size in ``Sample.source_size``; writers bring
their labels and masks back to it with :func:`at_source_size`, so every PNG a walk writes has
the size of its image file. ``oversize: refuse`` fails the image (its manifest entry says why).
Maps saved as ``.npz`` stay at the working size. Training reads images at their own size
(its crops resize them anyway); only the walks apply the limit.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from wsss.data.base import DatasetError, Sample
from wsss.data.tensors import resize_image

__all__ = ["at_source_size", "fit_max_side", "resize_label", "working_size"]


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of an image of height × width shrunk so that its longer side is ``max_side``
    (aspect ratio kept, each side ≥ 1); the size itself when it is within the limit."""
    longest = max(height, width)
    if longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_max_side(sample: Sample, max_side: int | None, oversize: str = "resize",
                 where: str = "") -> tuple[Sample, str]:
    """``sample`` within the limit and a note for the user ("" when nothing changed).

    max_side None: no limit. oversize "resize": image, saliency and mask shrunk to
    :func:`working_size`, ``source_size`` set to the file's (H, W); "refuse": DatasetError
    naming ``where`` (the file) and the limit.
    """
    H, W = sample.image.shape[:2]
    if max_side is None or max(H, W) <= max_side:
        return sample, ""
    if oversize == "refuse":
        raise DatasetError(f"{where or sample.id}: {W}×{H} is over data.max_side={max_side} "
                           f"(data.oversize=refuse; 'resize' labels it at a reduced size)")
    h, w = working_size(H, W, max_side)
    mask = None if sample.mask is None else resize_label(sample.mask, (h, w))
    saliency = None if sample.saliency is None else resize_image(sample.saliency, (h, w))
    fitted = replace(sample, image=resize_image(sample.image, (h, w)), mask=mask, saliency=saliency,
                     source_size=(H, W))
    return fitted, f"{W}×{H} is over data.max_side={max_side}: computed at {w}×{h}, outputs written at {W}×{H}"


def at_source_size(label: np.ndarray, sample: Sample) -> np.ndarray:
    """An H×W label or 0/255 mask of the working size → the size of the sample's image file
    (nearest neighbour); returned unchanged when the sample was not resized."""
    if sample.source_size is None or label.shape[:2] == tuple(sample.source_size):
        return label
    return resize_label(label, sample.source_size)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H×W label, mask or bool mask → ``size`` (h, w) by nearest neighbour, same dtype."""
    source = np.ascontiguousarray(label.astype(np.uint8) if label.dtype == bool else label)
    resized = cv2.resize(source, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)
    return resized.astype(bool) if label.dtype == bool else resized
