"""Maps averaged over several views of each image: rescaled copies and their mirror images.

The usual WSSS protocol for offline pseudo-labels: run the map method on the image at a few
scales (each rounded to a multiple of the model's patch stride) and mirrored left-right, bring
every view's maps back to the input size (mirrored back, bilinear ``align_corners=True``),
normalise each view's maps by their max (DESIGN step 4), and average. A peaky map that lands
on a different discriminative patch in each view then covers more of the object.

    method = configured_map_method(config.cam)        # bare method when there is one view
    maps = method(model, images, labels)              # B×C×H×W

Only the offline chain uses views (``wsss cam``, ``wsss pseudo-label``, the flows, the stage
table). The single-stage training loop differentiates its own forward of the training crop and
so takes GETAM of that one view, as the paper does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.attention.base import AttentionMapMethod
from wsss.attention.baselines import make_map_method
from wsss.config import CamConfig, start_block_problem
from wsss.models.attention_capture import vit_blocks
from wsss.models.vit_geometry import model_input_size, model_stride
from wsss.precision import bfloat16_autocast_dtype

__all__ = ["MultiViewMaps", "check_map_settings", "configured_map_method", "describe_views", "normalise_maps"]


def normalise_maps(maps: Tensor) -> Tensor:
    """…×H×W float ≥ 0 → each map divided by its max + 1e-5 (DESIGN step 4); NaN → 0."""
    maps = torch.nan_to_num(maps, nan=0.0).clamp_min(0)
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return maps / (peak + 1e-5)


class MultiViewMaps:
    """A map method averaged over ``scales`` × (the image, and its mirror when ``flip``).

    Called like the method it wraps: ``(model, images B×3×H×W, labels B×C) → B×C×H×W`` float
    in [0, 1] (each view normalised by its max before averaging; untagged classes 0).
    ``name`` is the wrapped method's. amp: each view's forward and backward under bfloat16
    autocast where the images' device computes bfloat16 natively (``cam.amp``; see
    ``wsss.precision``); the maps are float32 either way.
    """

    def __init__(self, method: AttentionMapMethod, scales: Sequence[float] = (1.0,), flip: bool = False,
                 amp: bool = False):
        scales = [float(s) for s in scales]
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
        self.method, self.scales, self.flip, self.amp = method, scales, bool(flip), bool(amp)
        self.name = method.name

    def _view(self, model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The wrapped method's (maps, probs) of one view, float32, under autocast with ``amp``."""
        dtype = bfloat16_autocast_dtype(images.device) if self.amp else None
        if dtype is None:
            return self.method.maps_and_probs(model, images, labels)
        with torch.autocast(images.device.type, dtype=dtype):
            maps, probs = self.method.maps_and_probs(model, images, labels)
        return maps.float(), probs.float()

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        return self.maps_and_probs(model, images, labels)[0]

    def maps_and_probs(self, model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The averaged maps and the classifier's ``B×C`` sigmoid probabilities averaged over
        the same views."""
        if images.dim() != 4:
            raise ValueError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
        H, W = images.shape[-2:]
        stride = model_stride(model)
        total, probs = None, 0.0
        for scale in self.scales:
            size = model_input_size((round(H * scale), round(W * scale)), stride)
            view = images if size == (H, W) else F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
            if self.flip:  # the image and its mirror in one call (maps never mix images)
                both, p = self._view(model, torch.cat([view, view.flip(-1)]), torch.cat([labels, labels]))
                views = [both[:len(images)], both[len(images):].flip(-1)]
                probs += p[:len(images)] + p[len(images):]
            else:
                maps, p = self._view(model, view, labels)
                views = [maps]
                probs += p
            for maps in views:
                if maps.shape[-2:] != (H, W):
                    maps = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=True)
                maps = normalise_maps(maps)
                total = maps if total is None else total + maps
        return total / self.num_views, probs / self.num_views


def configured_map_method(cam: CamConfig, name: str | None = None) -> AttentionMapMethod | MultiViewMaps:
    """The map method of a ``wsss.config.CamConfig``: ``name`` (default ``cam.method``), with
    ``cam.start_block`` for GETAM, averaged over ``cam.scales`` and ``cam.flip`` when that is more
    than the single view ``[1.0]`` without flip, or with ``cam.amp`` (else the bare method is
    returned)."""
    name = name or cam.method
    method = make_map_method(name, **({"start_block": cam.start_block} if name == "getam" else {}))
    if list(cam.scales) == [1.0] and not cam.flip and not cam.amp:
        return method
    return MultiViewMaps(method, cam.scales, cam.flip, cam.amp)


def check_map_settings(cam: CamConfig, model: nn.Module, name: str | None = None, model_name: str = "the model") -> None:
    """ValueError naming ``cam.start_block`` and the depth of ``model`` (``model_name``: e.g. its
    checkpoint) when the map method ``name`` (None: ``cam.method``; the in-loop labeler's is
    getam) could not run on it: checked once the model is loaded, before any image is computed
    and before an output folder is claimed for these settings."""
    if (name or cam.method) != "getam":
        return
    problem = start_block_problem(cam.start_block, len(vit_blocks(model)), model_name)
    if problem:
        raise ValueError(problem)


def describe_views(cam: CamConfig) -> str:
    """One line for reports: the views of a ``CamConfig``, e.g. "map views: scales 1, 1.5, mirrored"."""
    scales = ", ".join(f"{s:g}" for s in cam.scales)
    return f"map views: scale{'s' if len(cam.scales) > 1 else ''} {scales}{', mirrored' if cam.flip else ''}"
