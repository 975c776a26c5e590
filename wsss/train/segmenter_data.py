"""Training crops for the segmenter, drawn as a deterministic stream of (position, index) pairs.

Every sample of a run has a position in one endless stream: step ``s``, micro-batch ``m``,
process ``r`` of ``R`` and slot ``j`` of a batch of ``b`` take position
``((s·A + m)·R + r)·b + j`` (A = gradient-accumulation micro-batches). Position ``q`` shows
image ``perm_e[q mod n]`` with ``e = q div n`` the epoch and ``perm_e`` a permutation seeded by
(seed, e); its augmentation draws from a generator seeded by (seed, q). So a resumed run sees
exactly the crops an uninterrupted one would, whatever the DataLoader workers do.

Augmentation (applied alike to the image, its saliency map and its label map): random rescale
by a factor in ``scale_range`` (an image smaller than the crop afterwards is enlarged to cover
it: no padding, no ignore border), a random ``crop×crop`` window, a horizontal flip (p = 0.5).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Sampler

from wsss.data.base import Dataset
from wsss.data.corrections import TrainingLabels
from wsss.data.label_png import IGNORE_INDEX, read_label_png
from wsss.data.tensors import image_to_tensor, resize_image

__all__ = ["CropWindow", "random_window", "StepBatches", "SegmenterCrops"]


@dataclass(frozen=True)
class CropWindow:
    """Where a crop comes from: rescale the H×W image to ``size`` (h, w), take the window at
    (y0, x0) of side ``crop``, flip horizontally if ``flip``."""

    size: tuple[int, int]
    y0: int
    x0: int
    crop: int
    flip: bool

    def apply(self, array: np.ndarray, interpolation: int | None = None) -> np.ndarray:
        """H×W(×3) array → crop×crop(×3). interpolation: cv2 flag for the rescale (None: the
        image rule of ``resize_image``: area when shrinking, bilinear when enlarging)."""
        h, w = self.size
        if array.shape[:2] != (h, w):
            if interpolation is None:
                array = resize_image(array, (h, w))
            else:
                array = cv2.resize(array, (w, h), interpolation=interpolation)
        out = array[self.y0: self.y0 + self.crop, self.x0: self.x0 + self.crop]
        return np.ascontiguousarray(out[:, ::-1] if self.flip else out)


def random_window(shape: tuple[int, int], crop: int, scale_range: tuple[float, float],
                  rng: np.random.Generator) -> CropWindow:
    """A random CropWindow for an image of ``shape`` (H, W)."""
    H, W = shape
    scale = rng.uniform(*scale_range)
    scale = max(scale, crop / H, crop / W)  # cover the crop: no padding
    h, w = max(crop, round(H * scale)), max(crop, round(W * scale))
    y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return CropWindow((h, w), y0, x0, crop, bool(rng.random() < 0.5))


class StepBatches(Sampler):
    """Batches of (position, index) for steps ``start`` … ``steps − 1`` of one process.

    n: data set size; batch_size: per process and micro-batch; accum: micro-batches per step;
    world, rank: processes and this one's rank. Yields ``steps − start`` × ``accum`` lists.
    """

    def __init__(self, n: int, batch_size: int, accum: int, world: int, rank: int, seed: int,
                 start: int, steps: int) -> None:
        if n < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.accum, self.world, self.rank = n, batch_size, accum, world, rank
        self.seed, self.start, self.steps = seed, start, steps
        self._epoch, self._perm = -1, None

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.accum

    def index(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator).tolist()
        return self._perm[position % self.n]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.batch_size
        for step in range(self.start, self.steps):
            for m in range(self.accum):
                first = ((step * self.accum + m) * self.world + self.rank) * b
                yield [(q, self.index(q)) for q in range(first, first + b)]


class SegmenterCrops(torch.utils.data.Dataset):
    """Augmented crops of a wsss Dataset, indexed by (position, index) (see the module docstring).

    Each item is a dict:
        image:    3×S×S float32, ImageNet-normalised (the model input)
        rgb:      3×S×S uint8, the same crop (for PAMR and the CRF)
        tags:     C float32 multi-hot
        saliency: S×S float32 in [0, 1], the cropped saliency map (zeros when absent)
        has_saliency: bool
        label:    S×S int64 from the image's label PNG (0, 1..C, 255), or all 255 without labels

    labels: where two-stage training's label PNGs are (``wsss.data.corrections.TrainingLabels``: the
    pseudo-labels, a person's corrections in their place where there are some; None: single stage).
    """

    def __init__(self, dataset: Dataset, crop: int, scale_range: tuple[float, float], seed: int,
                 labels: TrainingLabels | None = None) -> None:
        self.dataset, self.crop, self.scale_range, self.seed = dataset, crop, tuple(scale_range), seed
        self.labels = labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        position, index = key
        sample = self.dataset.load(self.dataset.ids[index], masks=False)
        rng = np.random.default_rng((self.seed, position))
        window = random_window(sample.image.shape[:2], self.crop, self.scale_range, rng)
        rgb = window.apply(sample.image)
        item = {
            "image": image_to_tensor(rgb),
            "rgb": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "tags": torch.from_numpy(sample.tags),
            "has_saliency": sample.saliency is not None,
            "saliency": torch.zeros(self.crop, self.crop),
        }
        if sample.saliency is not None:  # to the image's size by the one resize rule, then the crop's window
            saliency = resize_image(np.nan_to_num(np.asarray(sample.saliency, np.float32)), sample.image.shape[:2])
            item["saliency"] = torch.from_numpy(window.apply(saliency, cv2.INTER_LINEAR))
        label = np.full((self.crop, self.crop), IGNORE_INDEX, np.uint8)
        if self.labels is not None:
            path = self.labels.path(sample.id)
            full = read_label_png(path)
            if full.shape != sample.image.shape[:2]:
                raise ValueError(f"{path}: label is {full.shape[1]}×{full.shape[0]}, "
                                 f"image is {sample.image.shape[1]}×{sample.image.shape[0]}")
            label = window.apply(full, cv2.INTER_NEAREST)
        item["label"] = torch.from_numpy(label).long()
        return item
