"""The pseudo-label chain for one batch: maps → PAMR → saliency + label rule → CRF.

    labeler = PseudoLabeler(model, config, dataset=dataset)
    result = labeler(samples)        # samples: Sample objects of one image size
    result.labels                    # B×H×W uint8: 0 background, 1..C, 255 ignore (final stage)

Every intermediate stage is kept in the result, so one pass serves both the label writer
(``wsss pseudo-label``) and the stage table (``wsss report``). The label rule is the same
torch code the single-stage training loop uses (``wsss.refine.label_rule.pseudo_labels``).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.attention import configured_map_method
from wsss.attention.base import AttentionMapMethod
from wsss.attention.views import MultiViewMaps
from wsss.attention.batched_grad import tag_slots
from wsss.attention.dataset_maps import model_input_size, model_stride, normalise_maps
from wsss.data.base import Dataset, Sample
from wsss.data.tensors import image_to_tensor, resize_image
from wsss.refine.label_rule import pseudo_labels
from wsss.refine.pamr import pamr
from wsss.refine.saliency import SaliencySource, saliency_source


@dataclass
class ChainResult:
    """One batch through the chain (B images of size H×W, C classes).

    raw: B×C×H×W float in [0, 1], the method's maps, each normalised by its max (untagged: 0).
    refined: B×C×H×W float in [0, 1], after PAMR and normalisation (= raw when PAMR is off).
    saliency: B entries, H×W bool tensor or None.
    rule: B×H×W uint8, the label rule's output (0, 1..C, 255).
    labels: B×H×W uint8, the final pseudo-labels (= rule, or the CRF's output when enabled).
    """

    samples: list[Sample]
    raw: Tensor
    refined: Tensor
    saliency: list[Tensor | None]
    rule: np.ndarray
    labels: np.ndarray


def gather_slots(maps: Tensor, slots: Tensor) -> Tensor:
    """B×C×H×W, B×K slot classes (-1 = empty) → B×K×H×W (empty slots: zeros)."""
    index = slots.clamp_min(0)[:, :, None, None].expand(-1, -1, *maps.shape[-2:])
    return maps.gather(1, index) * (slots >= 0)[:, :, None, None]


def scatter_slots(values: Tensor, slots: Tensor, num_classes: int) -> Tensor:
    """B×K×H×W values of the slot classes → B×C×H×W (classes in no slot: zeros)."""
    out = values.new_zeros(values.shape[0], num_classes + 1, *values.shape[-2:])
    index = torch.where(slots >= 0, slots, num_classes)[:, :, None, None].expand_as(values)
    return out.scatter(1, index, values)[:, :num_classes]


class PseudoLabeler:
    """Runs the chain of ``config`` (a wsss.config.Config) with one classifier.

    method: the map method (default: ``config.cam``); saliency: the source (default: from
    ``config.refine.saliency``, which may need ``dataset`` for folder maps); executor: a
    process pool for the CRF (None: the CRF makes its own per call).
    """

    def __init__(
        self,
        model: nn.Module,
        config,
        dataset: Dataset | None = None,
        method: AttentionMapMethod | MultiViewMaps | None = None,
        saliency: SaliencySource | None = None,
        executor: Executor | None = None,
    ):
        self.model, self.config, self.executor = model, config, executor
        self.method = configured_map_method(config.cam) if method is None else method
        self.saliency = saliency or saliency_source(config.refine.saliency, model=model, dataset=dataset)
        self.stride = model_stride(model)
        self.device = next(model.parameters()).device

    def __call__(self, samples: list[Sample]) -> ChainResult:
        sizes = {s.image.shape[:2] for s in samples}
        if len(sizes) != 1:
            raise ValueError(f"a batch must hold images of one size, got {sorted(sizes)}")
        (H, W), = sizes
        refine = self.config.refine
        inputs = torch.stack([image_to_tensor(resize_image(s.image, model_input_size((H, W), self.stride))) for s in samples])
        inputs = inputs.to(self.device)
        tags = torch.from_numpy(np.stack([s.tags for s in samples])).to(self.device)

        maps = self.method(self.model, inputs, tags).detach()
        if maps.shape[-2:] != (H, W):
            maps = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=True)
        raw = normalise_maps(maps) * (tags > 0)[:, :, None, None]

        refined = raw
        if refine.pamr.enabled and refine.pamr.iterations > 0:
            rgb = torch.from_numpy(np.stack([s.image for s in samples])).to(self.device).permute(0, 3, 1, 2).float()
            slots = tag_slots(tags)
            present = gather_slots(raw, slots)
            present = pamr(rgb, present, iterations=refine.pamr.iterations, dilations=refine.pamr.dilations)
            refined = normalise_maps(scatter_slots(present, slots, tags.shape[1])) * (tags > 0)[:, :, None, None]

        with torch.no_grad():
            saliency = self.saliency(samples, inputs, size=(H, W))
        rule = self._label_rule(refined, tags, saliency)
        labels = rule
        if refine.crf.enabled:
            from wsss.refine.crf import crf_pseudo_labels

            labels = np.stack(crf_pseudo_labels([s.image for s in samples], list(rule), refine.crf,
                                                executor=self.executor))
        return ChainResult(samples, raw.cpu(), refined.cpu(), saliency, rule, labels)

    def _label_rule(self, maps: Tensor, tags: Tensor, saliency: list[Tensor | None]) -> np.ndarray:
        """The label rule, run once for the images with saliency and once for those without."""
        rule = self.config.refine.label
        out = torch.zeros(maps.shape[0], *maps.shape[-2:], dtype=torch.uint8)
        with_map = [i for i, s in enumerate(saliency) if s is not None]
        without = [i for i, s in enumerate(saliency) if s is None]
        for group, sal in ((with_map, True), (without, False)):
            if not group:
                continue
            salient = torch.stack([saliency[i] for i in group]) if sal else None
            labels = pseudo_labels(maps[group], tags[group], salient, alpha=rule.alpha, tau=rule.tau,
                                   conflict=rule.conflict, opening=rule.opening)
            out[group] = labels.to(torch.uint8).cpu()
        return out.numpy()
