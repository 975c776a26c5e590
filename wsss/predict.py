"""Segmenter inference: multi-scale + flip softmax averaging, the guided filter, optional dense CRF.

    predictor = Predictor(segmenter, scales=(0.75, 1.0, 1.25), flip=True, guided=predict.guided_filter)
    predictor = Predictor.of(segmenter, config.predict)   # the same from a ``predict`` section
    probs = predictor([image, ...])          # B×(C+1)×H×W float in [0, 1], images of one size
    raw = predictor.averaged([image, ...])   # the same before the guided filter
    labels = probs_to_labels(images, probs, crf_config)   # H×W uint8 each: 0, 1..C

    # the walk that writes them for a data set: wsss.writers.prediction_pngs.predict_dataset

Any image size: at each scale the image is resized to the nearest multiple of the model's
stride, and the softmax is resized back to the image (bilinear) before averaging. With a
``predict.guided_filter`` radius, the average is then filtered with the image as the guide
(``wsss.refine.guided_filter``): the class boundaries move onto the image's edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.attention.base import eval_mode
from wsss.config import CrfConfig, GuidedFilterConfig, PredictConfig
from wsss.data.tensors import image_to_tensor, resize_image
from wsss.models.vit_geometry import model_input_size
from wsss.models.segmentation_model import Segmenter
from wsss.refine.crf import start_crf_label_maps
from wsss.refine.guided_filter import guided_filter

__all__ = ["Predictor", "probs_to_labels", "start_probs_to_labels", "start_foreground_masks"]


class Predictor:
    """Averaged softmax of a Segmenter over input scales and a horizontal flip, then (``guided``
    with a radius) the guided filter.

    scales: positive factors of the image size; flip: also run the mirrored input; guided: the
    ``predict.guided_filter`` section (None or radius 0: no filter).
    """

    def __init__(self, segmenter: Segmenter, scales: Sequence[float] = (1.0,), flip: bool = True,
                 guided: GuidedFilterConfig | None = None) -> None:
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive factors, got {list(scales)}")
        self.segmenter, self.scales, self.flip = segmenter, [float(s) for s in scales], flip
        self.device = next(segmenter.parameters()).device
        self.guided = guided if guided is not None and guided.radius > 0 else None
        # the filter's radius in the image's own pixels: tokens × (stride / mean scale)
        self.guided_radius = (max(1, round(self.guided.radius * segmenter.stride * len(self.scales) / sum(self.scales)))
                              if self.guided is not None else 0)

    @classmethod
    def of(cls, segmenter: Segmenter, predict: PredictConfig) -> Predictor:
        """The predictor of a ``predict`` section: its scales, flip and guided filter."""
        return cls(segmenter, predict.scales, predict.flip, predict.guided_filter)

    def __call__(self, images: Sequence[np.ndarray]) -> Tensor:
        """images: B arrays H×W×3 uint8 RGB of one size → B×(C+1)×H×W float probabilities (CPU),
        guided-filtered when the predictor has a filter."""
        return self.refine(images, self.averaged(images))

    def refine(self, images: Sequence[np.ndarray], probs: Tensor) -> Tensor:
        """The guided filter of :meth:`averaged`'s ``probs`` (B×(C+1)×H×W) with ``images`` as the
        guide, computed on the segmenter's device (CPU result); ``probs`` itself without a filter."""
        if self.guided is None:
            return probs
        guide = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return guided_filter(guide, probs.to(self.device), self.guided_radius, self.guided.eps).cpu()

    @torch.no_grad()
    def averaged(self, images: Sequence[np.ndarray]) -> Tensor:
        """images: B arrays H×W×3 uint8 RGB of one size → B×(C+1)×H×W float probabilities (CPU),
        the softmax averaged over scales and flip (no filter)."""
        sizes = {image.shape[:2] for image in images}
        if len(sizes) != 1:
            raise ValueError(f"a batch must hold images of one size, got {sorted(sizes)}")
        (H, W), = sizes
        B, total = len(images), None
        with eval_mode(self.segmenter):
            for scale in self.scales:
                size = model_input_size((round(H * scale), round(W * scale)), self.segmenter.stride)
                x = torch.stack([image_to_tensor(resize_image(image, size)) for image in images]).to(self.device)
                if self.flip:
                    x = torch.cat([x, x.flip(-1)])
                probs = torch.softmax(self.segmenter(x).seg.float(), dim=1)
                if self.flip:
                    probs = probs[:B] + probs[B:].flip(-1)
                if probs.shape[-2:] != (H, W):
                    probs = F.interpolate(probs, size=(H, W), mode="bilinear", align_corners=False)
                total = probs if total is None else total + probs
        return (total / (len(self.scales) * (2 if self.flip else 1))).cpu()


def probs_to_labels(images: Sequence[np.ndarray], probs: Tensor, crf: CrfConfig | None = None,
                    executor: Executor | None = None) -> list[np.ndarray]:
    """B×(C+1)×H×W probabilities → B label maps H×W uint8 (0 background, 1..C): the argmax, or
    the dense CRF's labels on the RGB images when ``crf`` (the ``refine.crf`` section) is given
    (in ``executor``, e.g. from ``wsss.refine.crf.crf_executor``, when one is given)."""
    return start_probs_to_labels(images, probs, crf, executor)()


def start_probs_to_labels(images: Sequence[np.ndarray], probs: Tensor, crf: CrfConfig | None = None,
                          executor: Executor | None = None) -> Callable[[], list[np.ndarray]]:
    """:func:`probs_to_labels` in two steps: the CRF's jobs submitted to ``executor``, the
    returned function waits for them (``wsss.refine.crf.start_crf_label_maps``)."""
    if crf is None:
        labels = list(probs.argmax(dim=1).to(torch.uint8).numpy())
        return lambda: labels
    pending = start_crf_label_maps(list(images), list(probs.numpy()), crf, executor=executor)
    return lambda: [label.astype(np.uint8) for label in pending()]


def start_foreground_masks(images: Sequence[np.ndarray], probs: Tensor, threshold: float = 0.5,
                           crf: CrfConfig | None = None,
                           executor: Executor | None = None) -> Callable[[], list[np.ndarray]]:
    """B×(C+1)×H×W segmenter probabilities → a function giving B masks H×W bool: where the
    foreground probability f = 1 − P(background) exceeds ``threshold``.

    With ``crf`` (a ``refine.crf`` section), the two-label dense CRF on the RGB images decides
    instead, its unary from the odds shifted so that ``threshold`` is the prior decision point:
    P(fg) ∝ f·(1 − threshold), P(bg) ∝ (1 − f)·threshold (at 0.5: [1 − f, f] itself). The
    CRF snaps the segmenter's coarse foreground (its stride is 8 to 16 pixels) to image edges.
    In two steps, as :func:`start_probs_to_labels`: with an ``executor`` the CRF's jobs are
    submitted and the returned function waits for them.
    """
    foreground = (1.0 - probs[:, 0]).clamp(0.0, 1.0)
    if crf is None:
        masks = list((foreground > threshold).numpy())
        return lambda: masks
    odds = torch.stack([(1.0 - foreground) * threshold, foreground * (1.0 - threshold)], dim=1)
    two = odds / odds.sum(dim=1, keepdim=True).clamp_min(1e-12)
    pending = start_crf_label_maps(list(images), list(two.numpy()), crf, executor=executor)
    return lambda: [label == 1 for label in pending()]
