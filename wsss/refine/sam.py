"""SAM-prompted refinement of pseudo-labels (``refine.sam``, off by default).

A stage of the labelling chain run after the label rule and before the CRF::

    maps → PAMR → refined maps ─┬─ saliency + label rule → rule labels ─┐
                                └─ prompts → SAM masks ──────────────────┴─ merge → (CRF) → labels

    refiner = sam_refiner(refine.sam, device="cpu")          # loads SAM once
    labels = refiner(rgb, refined, tags, rule_labels)          # H×W int64

**Prompts** (:func:`sam_prompts`, from the refined maps of one image, C×H×W in [0, 1]): for
each tagged class c, the connected regions (8-connectivity) of ``map_c ≥ region_threshold``
with at least ``min_area`` pixels, the ``max_regions`` largest of them. One prompt per region:

- the box around the region (x0, y0, x1, y1: its first and last column and row, inclusive);
- ``positive_points`` positive points at the highest peaks of map_c inside the region, chosen
  greedily (the highest, then the highest at least d = max(1, ``point_spacing`` · √area)
  pixels from those already chosen, ...; equal values go to the point deeper inside the
  region); fewer when the region has no room for more;
- ``negative_points`` negative points per OTHER tagged class d at the peaks of map_d (the same
  greedy choice, d spaced by √ of the area where map_d ≥ region_threshold), taken among the
  pixels where map_d > 0 and outside c's thresholded mask, so a negative point never sits on
  the region it argues against.

Points are (x, y) pixel coordinates (column, row) of pixels of the image.

**Masks**: SAM gets each prompt (box and points) and returns one mask (multimask output off:
a box with several points is the non-ambiguous case where the SAM authors advise a single
mask). M_c is the union of the masks of c's prompts. A class whose masks are all empty (or
that got no prompt) has no SAM evidence and is left to the label rule.

**Merge** (:func:`merge_sam_masks`), pixel by pixel, with *c claims the pixel* meaning M_c
holds it AND ``map_c ≥ agree`` there (SAM cannot paint a class where its map has no evidence):

1. exactly one class claims the pixel → that class;
2. two or more classes claim it → 255 (ignore);
3. no class claims it → the label rule's label, except that a pixel the rule gave to a class c
   that has SAM evidence (M_c not empty), outside M_c, where ``map_c < keep``, becomes
   background (0): SAM's outline of c wins over the rule's blurred boundary unless the map is
   very sure (``map_c ≥ keep``). The rule's 255 and its background stay as they are.

The training loop (``wsss.refine.inloop``) does not run this stage (it would run SAM's image
encoder at every step); the offline chain, the stage table (its "+SAM" column) and
self-training's second round do.

**Checkpoints** (:func:`load_sam`): the state-dict files of the segment-anything release
(``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``), read with
``torch.load(weights_only=True)``; the model type is told from the image encoder's width.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from wsss.config import SamConfig
from wsss.data.label_png import IGNORE_INDEX


__all__ = ["SAM_WIDTHS", "MaskPredictor", "SamMaskPredictor", "SamOutput", "SamPrompt", "SamRefiner", "cached_sam",
           "detect_sam_type", "load_sam", "merge_sam_masks", "sam_prompts", "sam_refiner"]

SAM_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # image-encoder width → model type
_WIDTH_KEY = "image_encoder.patch_embed.proj.weight"


class MaskPredictor(Protocol):
    """What the SAM stage needs of a promptable segmenter (SAM, or a stand-in in the tests)."""

    def set_image(self, rgb: np.ndarray) -> None:
        """rgb: H×W×3 uint8, the image the following prompts are about."""

    def predict(self, points: np.ndarray, point_labels: np.ndarray, box: np.ndarray) -> np.ndarray:
        """points: n×2 float (x, y) pixels (n may be 0); point_labels: n int (1 positive, 0
        negative); box: 4 float (x0, y0, x1, y1) → one H×W bool mask."""


class SamMaskPredictor:
    """A :class:`MaskPredictor` on ``segment_anything.SamPredictor`` around a ``Sam`` model.

    The image is resized to the image encoder's ``img_size`` on its longest side (1024 for the
    released models) and its embedding computed once per :meth:`set_image`. ``multimask``:
    False (default): SAM's single mask (a box plus several points is not ambiguous); True: the
    best-scoring of its three masks (by SAM's predicted IoU).
    """

    def __init__(self, model: torch.nn.Module, multimask: bool = False) -> None:
        from segment_anything import SamPredictor

        self.model, self.multimask = model, multimask
        self.predictor = SamPredictor(model)

    def set_image(self, rgb: np.ndarray) -> None:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"SAM needs an H×W×3 uint8 RGB image, got shape {rgb.shape}")
        self.predictor.set_image(rgb, image_format="RGB")

    def predict(self, points: np.ndarray, point_labels: np.ndarray, box: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        has_points = len(points) > 0
        masks, scores, _ = self.predictor.predict(
            point_coords=points if has_points else None,
            point_labels=np.asarray(point_labels, dtype=np.int64).reshape(-1) if has_points else None,
            box=np.asarray(box, dtype=np.float32).reshape(4), multimask_output=self.multimask)
        return masks[int(np.argmax(scores))].astype(bool)


# --- checkpoints -------------------------------------------------------------------------------


def detect_sam_type(state: dict) -> str | None:
    """vit_b / vit_l / vit_h from the width of ``image_encoder.patch_embed.proj.weight`` (768,
    1024, 1280); None when the key is missing or has another width."""
    weight = state.get(_WIDTH_KEY)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        return None
    return SAM_WIDTHS.get(int(weight.shape[0]))


def _some(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_sam(checkpoint: str | Path, model_type: str = "auto", device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ``segment_anything`` ``Sam`` model with the weights of ``checkpoint`` (a state dict
    as the official release writes it), in eval mode on ``device``.

    model_type: ``auto`` (told from the image encoder's width), ``vit_b``, ``vit_l``, ``vit_h``.
    Raises ValueError naming the file when it is missing, is not a state dict, or does not fit
    the model (missing, unexpected or mis-shaped keys, a few of them named).
    """
    from segment_anything import sam_model_registry

    path = Path(checkpoint)
    if model_type not in ("auto", *SAM_WIDTHS.values()):
        raise ValueError(f"SAM model type {model_type!r}: expected one of auto, vit_b, vit_l, vit_h")
    if not path.is_file():
        raise ValueError(f"{path}: SAM checkpoint not found (refine.sam.checkpoint: a sam_vit_*.pth state-dict file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: say which, and why
        raise ValueError(f"{path}: not a SAM checkpoint readable with torch.load(weights_only=True) "
                         f"({type(error).__name__}: {error})") from error
    if isinstance(state, dict) and len(state) == 1 and isinstance(next(iter(state.values())), dict) \
            and next(iter(state)) in ("model", "state_dict"):
        state = next(iter(state.values()))  # a training checkpoint's {"model": state_dict}
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        what = type(state).__name__ if not isinstance(state, dict) else "dict of non-tensors" if state else "empty dict"
        raise ValueError(f"{path}: not a SAM state dict (a {what}, expected a dict of parameter names → tensors "
                         f"like the official sam_vit_b_01ec64.pth)")
    detected = detect_sam_type(state)
    if model_type == "auto":
        if detected is None:
            weight = state.get(_WIDTH_KEY)
            found = ("missing" if weight is None else f"of shape {tuple(weight.shape)}")
            raise ValueError(f"{path}: cannot tell the SAM model type: {_WIDTH_KEY} is {found} (its first dimension "
                             f"is 768 for vit_b, 1024 for vit_l, 1280 for vit_h); set refine.sam.model_type")
        kind = detected
    else:
        kind = model_type
    model = sam_model_registry[kind](checkpoint=None)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        problems = [f"{len(keys)} {what}: {_some(keys)}" for what, keys in
                    (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("mis-shaped key(s)", misshaped))
                    if keys]
        looked = detected or "none of vit_b/vit_l/vit_h (by its image-encoder width)"
        raise ValueError(f"{path}: does not fit SAM {kind} (the file looks like {looked}): " + "; ".join(problems))
    model.load_state_dict(state)
    return model.eval().to(device)


@functools.lru_cache(maxsize=1)
def _cached_sam(path: str, model_type: str, device: str, stamp: tuple[int, int]) -> torch.nn.Module:
    return load_sam(path, model_type, device)


def cached_sam(checkpoint: str | Path, model_type: str = "auto", device: str | torch.device = "cpu") -> torch.nn.Module:
    """:func:`load_sam`, kept for the next call with the same file (size and modification
    time), type and device: the stage table builds one labeler per method on one SAM. The
    model is only read (eval, no grad), so several predictors may share it."""
    path = Path(checkpoint)
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else (-1, -1)
    return _cached_sam(str(path), model_type, str(device), stamp)


# --- prompts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamPrompt:
    """One SAM prompt: a region of class ``cls``'s thresholded map.

    cls: class index (channel of the maps; its label value is cls + 1); box: 4 float (x0, y0,
    x1, y1) pixels, inclusive; points: n×2 float (x, y) pixels; labels: n int64 (1 positive,
    0 negative), positives first; area: pixels of the region.
    """

    cls: int
    box: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    area: int


def _peaks(values: np.ndarray, candidates: np.ndarray, count: int, spacing: float) -> np.ndarray:
    """Greedy maxima of ``values`` over the True pixels of ``candidates``, each at least
    ``spacing`` pixels (Euclidean) from those chosen before; equal values go to the pixel
    farthest from the candidates' border. → k×2 float (x, y), k ≤ count."""
    if count <= 0 or not candidates.any():
        return np.zeros((0, 2), dtype=np.float64)
    depth = cv2.distanceTransform(np.pad(candidates, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    score = np.where(candidates, values.astype(np.float64) + 1e-9 * depth / max(float(depth.max()), 1.0), -np.inf)
    H, W = score.shape
    r = max(int(np.ceil(spacing)) - 1, 0)
    chosen = []
    for _ in range(count):
        i = int(np.argmax(score))
        if not np.isfinite(score.flat[i]):
            break
        y, x = divmod(i, W)
        chosen.append((x, y))
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, H), max(x - r, 0), min(x + r + 1, W)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        window = score[y0:y1, x0:x1]
        window[(yy - y) ** 2 + (xx - x) ** 2 < spacing ** 2] = -np.inf
    return np.asarray(chosen, dtype=np.float64).reshape(-1, 2)


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def sam_prompts(refined, tags, settings: SamConfig = SamConfig()) -> list[SamPrompt]:
    """The SAM prompts of one image (the rule is in the module docstring).

    Args:
        refined: ``C×H×W`` float in [0, 1], the image's refined maps (untagged classes ignored).
        tags: ``C`` multi-hot (> 0: tagged).
        settings: region_threshold, min_area, max_regions, positive_points, negative_points,
            point_spacing.

    Returns:
        the prompts, by class index, then by region area (largest first).
    """
    refined, tags = _as_numpy(refined).astype(np.float32), _as_numpy(tags)
    if refined.ndim != 3 or tags.shape != (refined.shape[0],):
        raise ValueError(f"refined must be C×H×W and tags C, got {refined.shape} and {tags.shape}")
    tagged = [int(c) for c in np.flatnonzero(tags > 0)]
    masks = {c: refined[c] >= settings.region_threshold for c in tagged}
    prompts = []
    for c in tagged:
        count, components, stats, _ = cv2.connectedComponentsWithStats(masks[c].astype(np.uint8), connectivity=8)
        regions = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= settings.min_area]
        regions = sorted(regions, key=lambda k: (-int(stats[k, cv2.CC_STAT_AREA]), k))[: settings.max_regions]
        if not regions:
            continue
        negatives = []
        for d in tagged:
            if d != c:
                spacing = max(1.0, settings.point_spacing * float(np.sqrt(masks[d].sum())))
                negatives.append(_peaks(refined[d], (refined[d] > 0) & ~masks[c], settings.negative_points, spacing))
        negative = np.concatenate(negatives) if negatives else np.zeros((0, 2))
        for k in regions:
            left, top, width, height, area = (int(v) for v in stats[k])
            spacing = max(1.0, settings.point_spacing * float(np.sqrt(area)))
            positive = _peaks(refined[c], components == k, settings.positive_points, spacing)
            box = np.array([left, top, left + width - 1, top + height - 1], dtype=np.float64)
            labels = np.concatenate([np.ones(len(positive), np.int64), np.zeros(len(negative), np.int64)])
            prompts.append(SamPrompt(c, box, np.concatenate([positive, negative]).reshape(-1, 2), labels, area))
    return prompts


# --- merge -------------------------------------------------------------------------------------


def merge_sam_masks(rule_labels, refined, masks: dict[int, np.ndarray], agree: float = 0.1,
                    keep: float = 0.9) -> np.ndarray:
    """SAM's masks merged into the label rule's labels (the rule is in the module docstring).

    Args:
        rule_labels: ``H×W`` int, the rule's labels (0 background, c + 1 class c, 255 ignore).
        refined: ``C×H×W`` float in [0, 1], the refined maps.
        masks: class index c → ``H×W`` bool, M_c (the union of its prompts' masks); a class
            left out or with an empty mask has no SAM evidence.
        agree: a class claims a pixel of M_c only where map_c ≥ agree.
        keep: the rule's label c outside M_c is kept where map_c ≥ keep (else background).

    Returns:
        ``H×W`` int64 labels.
    """
    rule = _as_numpy(rule_labels).astype(np.int64)
    refined = _as_numpy(refined)
    out = rule.copy()
    claims = np.zeros(rule.shape, dtype=np.int32)
    owner = np.zeros(rule.shape, dtype=np.int64)
    for c, mask in sorted(masks.items()):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != rule.shape:
            raise ValueError(f"SAM mask of class {c} is {mask.shape}, the labels are {rule.shape}")
        if not mask.any():
            continue
        claim = mask & (refined[c] >= agree)
        claims += claim
        owner[claim] = c + 1
        out[(rule == c + 1) & ~mask & (refined[c] < keep)] = 0
    out = np.where(claims == 1, owner, out)
    return np.where(claims >= 2, IGNORE_INDEX, out)


# --- the stage ---------------------------------------------------------------------------------


@dataclass
class SamOutput:
    """One image through the SAM stage: labels (H×W int64), the prompts and M_c per class."""

    labels: np.ndarray
    prompts: list[SamPrompt]
    masks: dict[int, np.ndarray]


class SamRefiner:
    """The SAM stage: prompts from the refined maps → masks → merge with the rule's labels.

    predictor: a :class:`MaskPredictor`; settings: the ``refine.sam`` section (its prompt and merge settings). Calls on one refiner
    are serialised (the predictor holds the current image); SAM runs only for images with at
    least one prompt.
    """

    def __init__(self, predictor: MaskPredictor, settings: SamConfig = SamConfig()) -> None:
        self.predictor, self.settings = predictor, settings
        self._lock = threading.Lock()

    def run(self, rgb, refined, tags, rule_labels) -> SamOutput:
        """rgb: ``H×W×3`` uint8; refined: ``C×H×W`` float in [0, 1]; tags: ``C`` multi-hot;
        rule_labels: ``H×W`` int → :class:`SamOutput`."""
        rgb, refined = _as_numpy(rgb), _as_numpy(refined)
        rule = _as_numpy(rule_labels).astype(np.int64)
        H, W = rule.shape
        if rgb.shape != (H, W, 3) or refined.shape[1:] != (H, W):
            raise ValueError(f"SAM stage: image {rgb.shape}, maps {refined.shape} and labels {rule.shape} "
                             f"must share H×W (image H×W×3, maps C×H×W)")
        prompts = sam_prompts(refined, tags, self.settings)
        masks: dict[int, np.ndarray] = {}
        if prompts:
            with self._lock:
                self.predictor.set_image(np.ascontiguousarray(rgb, dtype=np.uint8))
                for prompt in prompts:
                    mask = np.asarray(self.predictor.predict(prompt.points, prompt.labels, prompt.box), dtype=bool)
                    if mask.shape != (H, W):
                        raise ValueError(f"the mask predictor returned a {mask.shape} mask for a {(H, W)} image")
                    masks[prompt.cls] = masks[prompt.cls] | mask if prompt.cls in masks else mask
        labels = merge_sam_masks(rule, refined, masks, agree=self.settings.agree, keep=self.settings.keep)
        return SamOutput(labels, prompts, masks)

    def __call__(self, rgb, refined, tags, rule_labels) -> np.ndarray:
        """The labels of :meth:`run`: ``H×W`` int64 (0 background, 1..C, 255 ignore)."""
        return self.run(rgb, refined, tags, rule_labels).labels


def sam_refiner(config: SamConfig, device: str | torch.device = "cpu") -> SamRefiner:
    """The :class:`SamRefiner` of a ``refine.sam`` section: SAM loaded from its checkpoint
    (once per file, type and device: :func:`cached_sam`) on ``device``."""
    if config.checkpoint is None:
        raise ValueError("refine.sam.enabled is true but refine.sam.checkpoint is not set: give the path of a "
                         "sam_vit_b_01ec64.pth / sam_vit_l_0b3195.pth / sam_vit_h_4b8939.pth state-dict file")
    model = cached_sam(config.checkpoint, config.model_type, device)
    return SamRefiner(SamMaskPredictor(model), config)
