"""The labelling chain, one implementation for every caller (DESIGN steps 4–6):

    maps → normalise → PAMR on the tag slots → normalise → saliency + label rule → optional SAM
         → optional CRF

    chain = LabelChain(refine.pamr, refine.label, crf=refine.crf if refine.crf.enabled else None)
    result = chain(maps, tags, rgb, saliency)     # every stage kept: raw, refined, rule, sam, labels
    finish = chain.start(maps, tags, rgb, saliency)   # the same, the CRF's jobs left running in
    ...                                               # its pool (refine.crf.overlap: the next
    result = finish()                                 # batch's maps meanwhile); then wait

The callers differ only in where the maps and the saliency come from:

- offline (``wsss pseudo-label``, the flows, the stage table): :class:`PseudoLabeler` runs a
  map method (GETAM or a baseline, over its views) and a saliency source on a batch of images;
- the single-stage training loop (``wsss.refine.inloop``): GETAM from the step's own forward,
  the saliency of the training crops, no SAM, no CRF;
- self-training's second round: :class:`SavedMapsLabeler` reads the refined maps the first
  round saved and runs the rule (+ CRF) with the new saliency.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.attention import check_map_settings, configured_map_method
from wsss.attention.base import AttentionMapMethod
from wsss.data.npz_maps import read_npz_maps, read_npz_probs
from wsss.attention.slots import gather_slots, scatter_slots, tag_slots
from wsss.attention.views import MultiViewMaps, normalise_maps
from wsss.config import CamConfig, CrfConfig, LabelRuleConfig, PamrConfig, RefineConfig
from wsss.data.base import Dataset, Sample
from wsss.models.vit_geometry import model_input_size, model_inputs, model_stride
from wsss.refine.label_rule import pseudo_labels
from wsss.refine.pamr import pamr
from wsss.refine.saliency import SaliencySource, saliency_source
from wsss.refine.sam import SamRefiner

__all__ = ["ChainResult", "LabelChain", "PseudoLabeler", "offline_labeler"]


@dataclass
class ChainResult:
    """One batch through the chain (B images of size H×W, C classes); tensors on the device of
    the chain's input. A labeler's batch of several image sizes (one model input size, see
    ``wsss.data.batching``) gives, for raw, refined, rule, labels and sam, a list of B per-image
    tensors instead (C×H_i×W_i or H_i×W_i): ``result.labels[i]`` is image i's either way
    (:meth:`join`).

    raw: B×C×H×W float in [0, 1], the maps upsampled and each normalised by its max (untagged: 0).
    refined: B×C×H×W float in [0, 1], after PAMR and normalisation (= raw when PAMR is off).
    saliency: B entries, H×W bool tensor (True = salient) or None.
    rule: B×H×W int64, the label rule's output (0 background, 1..C, 255 ignore).
    labels: B×H×W int64, the final pseudo-labels: the CRF's output when it is on, run on the
        SAM stage's labels when that is on (else on the rule's); without a CRF, those labels.
    sam: B×H×W int64, the labels after the SAM stage (``wsss.refine.sam``), None when it is off.
    probs: B×C float, the classifier's sigmoid probabilities (averaged over the map views), None
        when unknown (e.g. labels from saved maps written without them).
    """

    raw: Tensor | list[Tensor]
    refined: Tensor | list[Tensor]
    saliency: list[Tensor | None]
    rule: Tensor | list[Tensor]
    labels: Tensor | list[Tensor]
    sam: Tensor | list[Tensor] | None = None
    probs: Tensor | None = None

    @staticmethod
    def join(parts: list[tuple[list[int], ChainResult]]) -> ChainResult:
        """One result of a batch from the results of its parts: (indices in the batch, the
        part's result), the parts covering every index once. A single part is returned as it is;
        else the image fields are lists in batch order and probs is stacked (None if a part's is)."""
        if len(parts) == 1:
            return parts[0][1]
        order: dict[int, tuple[ChainResult, int]] = {}
        for indices, result in parts:
            order.update({index: (result, j) for j, index in enumerate(indices)})
        picked = [order[index] for index in range(len(order))]

        def pick(name: str) -> list:
            return [getattr(result, name)[j] for result, j in picked]

        def whole(name: str) -> bool:
            return all(getattr(result, name) is not None for _, result in parts)

        return ChainResult(pick("raw"), pick("refined"), pick("saliency"), pick("rule"), pick("labels"),
                           pick("sam") if whole("sam") else None,
                           torch.stack(pick("probs")) if whole("probs") else None)


class LabelChain:
    """Class maps of a batch → pseudo-labels, keeping every stage.

    pamr, rule: the ``refine.pamr`` and ``refine.label`` sections; crf: ``refine.crf`` to run the
    dense CRF on the rule's (or SAM's) labels, or None; executor: a process pool for the CRF
    (``wsss.refine.crf.crf_executor``; None: the CRF runs in this process); sam: the SAM stage
    (``wsss.refine.sam.sam_refiner(refine.sam)``), run in this process after the label rule on
    the refined maps, or None (off).

    ``chain(...)`` returns the batch's :class:`ChainResult`; ``chain.start(...)`` returns a
    function that does: with a pool the CRF jobs are then still running in it, and the caller
    may compute the next batch's maps before it waits for them (``write_pseudo_labels`` does
    when ``refine.crf.overlap`` says so).
    """

    def __init__(self, pamr: PamrConfig, rule: LabelRuleConfig, crf: CrfConfig | None = None,
                 executor: Executor | None = None, sam: SamRefiner | None = None) -> None:
        self.pamr, self.rule, self.crf, self.executor, self.sam = pamr, rule, crf, executor, sam

    def __call__(self, maps: Tensor, tags: Tensor, rgb: Tensor, saliency: Sequence[Tensor | None]) -> ChainResult:
        """The batch through every stage; arguments as :meth:`start`."""
        return self.start(maps, tags, rgb, saliency)()

    @torch.no_grad()
    def start(self, maps: Tensor, tags: Tensor, rgb: Tensor,
              saliency: Sequence[Tensor | None]) -> Callable[[], ChainResult]:
        """Every stage up to the CRF, whose jobs go to the pool (``executor``; without one the
        CRF runs here too); the returned function waits for them and gives the result.

        Args:
            maps: ``B×C×h×w`` float ≥ 0, a map method's output at any size (upsampled to H×W,
                bilinear, align_corners=True).
            tags: ``B×C`` multi-hot.
            rgb: ``B×3×H×W`` the images (uint8 or float, any range: PAMR is scale-free; the CRF
                reads it as 0..255 RGB).
            saliency: B entries, ``H×W`` bool (True = salient) or None (no saliency for that image).
        """
        H, W = rgb.shape[-2:]
        maps = maps.detach().float()
        if maps.shape[-2:] != (H, W):
            maps = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=True)
        tags = tags.to(maps.device)
        present = (tags > 0)[:, :, None, None]
        raw = normalise_maps(maps) * present
        refined = raw
        if self.pamr.enabled and self.pamr.iterations > 0:
            slots = tag_slots(tags)
            slot_maps = pamr(rgb.float(), gather_slots(raw, slots), iterations=self.pamr.iterations,
                             dilations=self.pamr.dilations)
            refined = normalise_maps(scatter_slots(slot_maps, slots, tags.shape[1])) * present
        saliency = list(saliency)
        rule = self._rule(refined, tags, saliency)
        labels, sam = rule, None
        images = None
        if self.sam is not None:
            images = list(rgb.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy())
            maps_np, tags_np, rule_np = refined.cpu().numpy(), tags.cpu().numpy(), rule.cpu().numpy()
            sam = torch.from_numpy(np.stack([self.sam(images[i], maps_np[i], tags_np[i], rule_np[i])
                                             for i in range(len(images))])).long().to(rule.device)
            labels = sam
        if self.crf is None:
            result = ChainResult(raw, refined, saliency, rule, labels, sam)
            return lambda: result
        from wsss.refine.crf import start_crf_pseudo_labels

        if images is None:
            images = list(rgb.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy())
        pending = start_crf_pseudo_labels(images, list(labels.to(torch.uint8).cpu().numpy()), self.crf,
                                          executor=self.executor)

        def finish() -> ChainResult:
            crf_labels = torch.from_numpy(np.stack(pending())).long().to(rule.device)
            return ChainResult(raw, refined, saliency, rule, crf_labels, sam)

        return finish

    def _rule(self, maps: Tensor, tags: Tensor, saliency: list[Tensor | None]) -> Tensor:
        """The label rule, run once for the images with saliency and once for those without."""
        out = torch.zeros(maps.shape[0], *maps.shape[-2:], dtype=torch.long, device=maps.device)
        with_map = [i for i, s in enumerate(saliency) if s is not None]
        without = [i for i, s in enumerate(saliency) if s is None]
        rule = self.rule
        for group, salient in ((with_map, True), (without, False)):
            if not group:
                continue
            masks = torch.stack([saliency[i] for i in group]).to(maps.device) if salient else None
            out[group] = pseudo_labels(maps[group], tags[group], masks, alpha=rule.alpha, tau=rule.tau,
                                       conflict=rule.conflict, opening=rule.opening)
        return out


def _by_size(samples: list[Sample]) -> dict[tuple[int, int], list[int]]:
    """The indices of ``samples`` per image size (H, W), sizes in the order of their first image."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(tuple(sample.image.shape[:2]), []).append(index)
    return groups


class _BatchLabeler:
    """What the labelers of batches of samples share: ``labeler(samples)`` is
    ``labeler.start(samples)()``; ``start`` hands each image size's samples with that size
    (H, W) to the subclass's ``_start`` and joins their results (:meth:`ChainResult.join`).
    ``size_key``: which images a walk may batch together (``wsss.data.batching``): None, one
    exact size."""

    size_key: Callable[[tuple[int, int]], Hashable] | None = None

    def __call__(self, samples: list[Sample]) -> ChainResult:
        return self.start(samples)()

    def start(self, samples: list[Sample]) -> Callable[[], ChainResult]:
        parts = [(indices, self._start([samples[i] for i in indices], size))
                 for size, indices in _by_size(samples).items()]
        return lambda: ChainResult.join([(indices, pending()) for indices, pending in parts])

    def _start(self, samples: list[Sample], size: tuple[int, int]) -> Callable[[], ChainResult]:
        raise NotImplementedError


class PseudoLabeler(_BatchLabeler):
    """The offline chain: a map method and a saliency source on batches of images.

    model: the timm ViT classifier; method: a map method (over its views); saliency: a source;
    chain: the :class:`LabelChain`. ``labeler(samples)`` takes ``Sample`` objects of one model
    input size (their sizes may differ; ``model_inputs``) and returns their :class:`ChainResult`;
    ``labeler.start(samples)`` returns a function that does (:meth:`LabelChain.start`). The maps
    of the whole batch come from one call of the map method; saliency, PAMR, the rule and the CRF
    then run per image size, each image at its own.
    """

    def __init__(self, model: nn.Module, method: AttentionMapMethod | MultiViewMaps, saliency: SaliencySource,
                 chain: LabelChain) -> None:
        self.model, self.method, self.saliency, self.chain = model, method, saliency, chain
        self.stride = model_stride(model)
        self.device = next(model.parameters()).device

    def size_key(self, size: tuple[int, int]) -> tuple[int, int]:
        """Images of one model input size share a batch."""
        return model_input_size(size, self.stride)

    def start(self, samples: list[Sample]) -> Callable[[], ChainResult]:
        inputs = model_inputs(samples, self.stride).to(self.device)
        tags = torch.from_numpy(np.stack([s.tags for s in samples])).to(self.device)
        maps, probs = self.method.maps_and_probs(self.model, inputs, tags)
        parts = []
        for size, indices in _by_size(samples).items():
            group = [samples[i] for i in indices]
            with torch.no_grad():
                saliency = self.saliency(group, inputs[indices], size=size)
            rgb = torch.from_numpy(np.stack([s.image for s in group])).to(self.device).permute(0, 3, 1, 2)
            parts.append((indices, self.chain.start(maps[indices], tags[indices], rgb, saliency), probs[indices]))
        return lambda: ChainResult.join([(indices, replace(pending(), probs=p)) for indices, pending, p in parts])


class SavedMapsLabeler(_BatchLabeler):
    """Pseudo-labels from the refined maps of an earlier pass (``OUT/maps/<id>.npz``, as
    ``write_pseudo_labels(save_maps=True)`` writes them): the label rule with ``saliency`` (+
    the CRF of ``chain``) without computing the maps or PAMR again. Self-training's second round
    uses it: the same maps, a new saliency. A batch whose saved maps are missing, of another
    size, or of other classes than the image's tags raises ValueError (that image fails alone).
    ``start`` as :class:`PseudoLabeler`'s.
    """

    def __init__(self, maps_dir: str | os.PathLike, saliency: SaliencySource, chain: LabelChain) -> None:
        self.maps_dir, self.saliency = Path(maps_dir), saliency
        self.device = torch.device("cpu")  # where its maps are (read from disk)
        self.chain = LabelChain(chain.pamr.model_copy(update={"enabled": False}), chain.rule, chain.crf, chain.executor,
                                chain.sam)

    def _start(self, samples: list[Sample], size: tuple[int, int]) -> Callable[[], ChainResult]:
        H, W = size
        tags = torch.from_numpy(np.stack([s.tags for s in samples]))
        maps = torch.zeros(len(samples), tags.shape[1], H, W)
        probs = torch.zeros(len(samples), tags.shape[1])
        all_probs = True
        for i, sample in enumerate(samples):
            path = self.maps_dir / f"{sample.id}.npz"
            if not path.is_file():
                raise ValueError(f"{path}: no saved maps for image {sample.id}")
            saved, classes = read_npz_maps(path)
            if saved.shape[1:] != (H, W) or not np.array_equal(classes, np.flatnonzero(sample.tags)):
                raise ValueError(f"{path}: maps of classes {classes.tolist()} at {saved.shape[1:]} do not fit image "
                                 f"{sample.id} (tags {np.flatnonzero(sample.tags).tolist()}, size {(H, W)})")
            maps[i, classes] = torch.from_numpy(saved)
            saved_probs = read_npz_probs(path)
            if saved_probs is None:
                all_probs = False
            else:
                probs[i, classes] = torch.from_numpy(saved_probs)
        saliency = self.saliency(samples, None, size=(H, W))
        rgb = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
        pending = self.chain.start(maps, tags, rgb, saliency)
        return lambda: replace(pending(), probs=probs if all_probs else None)


def offline_labeler(model: nn.Module, cam: CamConfig, refine: RefineConfig, dataset: Dataset | None = None,
                    crf: bool | None = None, executor: Executor | None = None,
                    saliency: SaliencySource | None = None) -> PseudoLabeler:
    """The :class:`PseudoLabeler` of the ``cam`` and ``refine`` sections.

    dataset: for folder saliency (its maps); crf: run the CRF (None: ``refine.crf.enabled``);
    saliency: a source to use instead of ``refine.saliency``'s (e.g. one shared by several methods).
    With ``refine.sam.enabled`` the chain runs the SAM stage, SAM loaded from its checkpoint on
    the model's device (once per file, type and device: labelers made one after another share it).
    """
    check_map_settings(cam, model)  # a bad cam.start_block fails here, not once per image
    use_crf = refine.crf.enabled if crf is None else crf
    chain = LabelChain(refine.pamr, refine.label, refine.crf if use_crf else None, executor,
                       _sam_stage(refine, next(model.parameters()).device))
    source = saliency or saliency_source(refine.saliency, model=model, dataset=dataset)
    return PseudoLabeler(model, configured_map_method(cam), source, chain)


def saved_maps_labeler(maps_dir: str | os.PathLike, refine: RefineConfig, dataset: Dataset | None = None,
                       executor: Executor | None = None) -> SavedMapsLabeler:
    """The :class:`SavedMapsLabeler` of the ``refine`` section (its saliency, label rule, SAM
    stage and CRF) on the maps in ``maps_dir``. dataset: for folder saliency (its maps)."""
    chain = LabelChain(refine.pamr, refine.label, refine.crf if refine.crf.enabled else None, executor,
                       _sam_stage(refine, "cpu"))
    return SavedMapsLabeler(maps_dir, saliency_source(refine.saliency, dataset=dataset), chain)


def _sam_stage(refine: RefineConfig, device) -> SamRefiner | None:
    """The SAM stage of ``refine.sam`` on ``device``, or None when it is off."""
    if not refine.sam.enabled:
        return None
    from wsss.refine.sam import sam_refiner

    return sam_refiner(refine.sam, device=device)
