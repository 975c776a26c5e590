"""Saliency sources for the pseudo-label rule (DESIGN step 5): where "foreground" may be.

One interface, chosen by ``refine.saliency.source``:

    folder    maps from the data set's saliency folder (DATASET/saliency/<id>.png or
              data.saliency_dir): any size, resized to the output size, salient where > threshold
    tokencut  built in: normalized cut on the ViT's last-block keys (wsss.refine.tokencut): the
              classifier's, or those of ``refine.saliency.backbone`` (its own timm ViT and weights,
              e.g. a self-supervised DINO backbone) when that is set
    none      no saliency: the label rule takes the background from α alone

    source = saliency_source(config.refine.saliency, model=model, dataset=dataset)
    masks = source(samples, images)      # list of B entries: H×W bool tensor, or None
    source.name                          # "tokencut", "tokencut (dino backbone vit_small_patch16_224)", ...

    # tokencut without a second forward: record the keys during the forward GETAM runs
    with AttentionCapture(model, ...) as cap, KeyCapture(model) as capture:
        logits = model(images)
        keys = capture.keys          # B×N×D; dropped when the context exits
    masks = source.from_keys(keys, token_layout(model, images.shape[-2:]), sizes)

Per batch the pseudo-label chain passes the batch's ``Sample`` objects (or ids) and, for
tokencut, the model input ``B×3×h×w`` (TokenCut on a backbone of another stride resizes the
samples' own images for it, see ``TokenCutSaliency``). Output size of each entry: ``size``
when given, else the sample's image size (for a ``Sample``), else the input's h×w. Entries are
on the device of ``images`` (CPU without images). ``None`` means "no saliency for this image": always for
``none``, and for ``folder`` with ``missing: none`` when the file is absent.

Folder maps are read from ``Sample.saliency`` when the data set loaded it, otherwise from
``dataset.saliency_path(id)``. A map of another size than the output is resized (INTER_AREA
when shrinking, bilinear when enlarging, as images are) and thresholded after resizing. A
missing file raises DatasetError naming it (``missing: error``); a file that cannot be decoded
raises ImageReadError naming it. Note: training crops/flips must be applied to
``Sample.saliency`` by the caller before it reaches the folder source.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from wsss.config import ModelConfig, SaliencyConfig
from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.images import read_gray01
from wsss.data.tensors import resize_image
from wsss.models.vit_geometry import TokenLayout, model_inputs, model_stride
from wsss.models.classifier import create_classifier
from wsss.models.errors import PretrainedWeightsError
from wsss.models.weights import Weights, load_pretrained
from wsss.refine.tokencut import grid_to_image, last_block_keys, normalized_cut

__all__ = ["SaliencySource", "NoSaliency", "FolderSaliency", "TokenCutSaliency", "saliency_source",
           "saliency_backbone", "binarise_saliency"]

Item = Sample | str
BACKBONE = "refine.saliency.backbone"
_MODEL_SETTING = re.compile(r"\bmodel\.(?=(?:name|pretrained|allow_download)\b)")  # the `model` settings errors name


def _item_id(item: Item) -> str:
    return item if isinstance(item, str) else item.id


class SaliencySource(abc.ABC):
    """Base class: ``source(samples, images=None, size=None) → list of (H×W bool | None)``.

    Subclasses implement ``compute`` only; ``__call__`` resolves output sizes and devices.
    """

    name: str = ""

    def __call__(
        self, samples: Sequence[Item], images: Tensor | None = None, size: Sequence[int] | None = None
    ) -> list[Tensor | None]:
        """samples: B ``Sample`` objects or ids.  images: B×3×h×w model input or None.
        size: (H, W) of every output, or None (see the module docstring).
        Returns B entries: H×W bool tensor (True = salient) or None."""
        if images is not None and images.shape[0] != len(samples):
            raise ValueError(f"{len(samples)} samples but images hold a batch of {images.shape[0]}")
        sizes = [self._output_size(item, images, size) for item in samples]
        masks = self.compute(samples, images, sizes)
        device = images.device if images is not None else torch.device("cpu")
        return [None if mask is None else mask.to(device) for mask in masks]

    @staticmethod
    def _output_size(item: Item, images: Tensor | None, size: Sequence[int] | None) -> tuple[int, int]:
        if size is not None:
            return int(size[0]), int(size[1])
        if isinstance(item, Sample):
            return tuple(item.image.shape[:2])
        if images is not None:
            return tuple(images.shape[-2:])
        raise ValueError(f"image {item!r}: no output size (pass size=, a Sample, or images)")

    @abc.abstractmethod
    def compute(
        self, samples: Sequence[Item], images: Tensor | None, sizes: list[tuple[int, int]]
    ) -> list[Tensor | None]:
        """One entry per sample: sizes[i] bool tensor or None."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoSaliency(SaliencySource):
    """``none``: no image has saliency; the label rule uses the background from α alone."""

    name = "none"

    def compute(self, samples, images, sizes):
        return [None] * len(samples)


class FolderSaliency(SaliencySource):
    """``folder``: grayscale maps of the data set, binarised at ``> threshold`` after resizing.

    dataset: gives ``saliency_path(id)`` (DATASET/saliency/<id>.png or data.saliency_dir).
    missing: "error" (DatasetError naming the file) or "none" (that image gets None).
    """

    name = "folder"

    def __init__(self, dataset: Dataset, threshold: float = 0.5, missing: str = "error") -> None:
        if missing not in ("error", "none"):
            raise ValueError(f"missing={missing!r}: expected one of error, none")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold}: expected a value in [0, 1]")
        self.dataset, self.threshold, self.missing = dataset, threshold, missing

    def read(self, item: Item) -> np.ndarray | None:
        """The map of one image: H0×W0 float32 in [0, 1], or None (missing, ``missing: none``)."""
        if isinstance(item, Sample) and item.saliency is not None:
            return item.saliency
        image_id = _item_id(item)
        path = self.dataset.saliency_path(image_id)
        if path is None:
            raise DatasetError(
                f"refine.saliency.source=folder but the data set has no saliency folder for image "
                f"{image_id!r} (expected DATASET/saliency/ or data.saliency_dir); "
                "or set refine.saliency.source to tokencut or none"
            )
        if not Path(path).is_file():
            if self.missing == "none":
                return None
            raise DatasetError(f"{path}: saliency map missing for image {image_id} "
                               "(set refine.saliency.missing=none to label it without saliency)")
        return read_gray01(path)

    def compute(self, samples, images, sizes):
        maps = [self.read(item) for item in samples]
        return [None if m is None else binarise_saliency(m, s, self.threshold) for m, s in zip(maps, sizes)]

    def __repr__(self) -> str:
        return f"FolderSaliency(threshold={self.threshold}, missing={self.missing!r})"


class TokenCutSaliency(SaliencySource):
    """``tokencut``: normalized cut on the model's last-block keys (wsss.refine.tokencut).

    Needs the model input ``images`` (B×3×h×w). Sides that are multiples of the model's stride
    are used as given; otherwise (an input made for a model of another stride, e.g. the
    classifier's when ``model`` is a saliency backbone) the keys come from the samples' own
    images resized for this model (``model_inputs``), as ``write_saliency_maps`` makes them. A
    chain that already ran a forward inside ``KeyCapture`` can call ``from_keys`` instead and
    save the second forward. Works best with self-supervised (DINO) weights; on a classifier
    trained from the data set's tags it is weaker (see wsss.refine.tokencut).

    name: the source in logs and reports (which keys it cuts).
    """

    def __init__(self, model: nn.Module, tau: float = 0.2, eps: float = 1e-5, objects: int = 1,
                 name: str = "tokencut") -> None:
        if objects < 1:
            raise ValueError(f"objects={objects}: expected at least 1")
        self.model, self.tau, self.eps, self.objects, self.name = model, tau, eps, objects, name
        self.stride = model_stride(model)

    def compute(self, samples, images, sizes):
        if images is None:
            raise ValueError("the tokencut saliency source needs the model input images (B×3×h×w)")
        keys, layout = last_block_keys(self.model, self._input(samples, images))
        return self._cut(keys, layout.grid, sizes)

    def _input(self, samples: Sequence[Item], images: Tensor) -> Tensor:
        """The B×3×h×w input the keys come from: ``images`` when its sides are multiples of the
        stride, else the samples' images resized to the nearest multiples, on the device of
        ``images``. Ids instead of samples then raise ValueError (their images are not at hand)."""
        h, w = images.shape[-2:]
        if h % self.stride == 0 and w % self.stride == 0:
            return images
        if not all(isinstance(s, Sample) for s in samples):
            raise ValueError(f"tokencut: images of {h}×{w} are not multiples of the model's stride {self.stride}; "
                             "pass the Sample objects (their images are resized for the model) or such images")
        return model_inputs(samples, self.stride).to(images.device)

    def from_keys(self, keys: Tensor, layout: TokenLayout, sizes: Sequence[Sequence[int]]) -> list[Tensor]:
        """Saliency from keys recorded by ``KeyCapture`` around a forward the caller ran anyway.

        keys: B×N×D (``capture.keys``, prefix tokens included); layout: ``token_layout(model,
        images.shape[-2:])``; sizes: one (H, W) per image. Returns B H×W bool tensors.
        """
        if keys.shape[1] != layout.num_tokens:
            raise ValueError(f"keys hold {keys.shape[1]} tokens, layout expects {layout.num_tokens}")
        return self._cut(keys[:, layout.num_prefix_tokens:], layout.grid, [tuple(s) for s in sizes])

    def _cut(self, keys: Tensor, grid: Sequence[int], sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        masks = normalized_cut(keys, grid, tau=self.tau, eps=self.eps, objects=self.objects)
        return [grid_to_image(mask[None], size)[0] for mask, size in zip(masks, sizes)]

    def __repr__(self) -> str:
        return f"TokenCutSaliency(tau={self.tau}, eps={self.eps}, objects={self.objects}, name={self.name!r})"


def saliency_backbone(section: ModelConfig, device: torch.device | str = "cpu") -> tuple[nn.Module, Weights | None]:
    """TokenCut's own ViT: the timm model of ``section`` (the ``refine.saliency.backbone``
    section) built without a head (num_classes=0), its ``pretrained`` weights loaded in any
    layout of ``wsss.models.weights``, in eval mode on ``device``.

    Returns (the model, the weights read; None without ``pretrained``: random weights). A model
    that cannot be built raises ValueError, weights that cannot be read or do not fit
    PretrainedWeightsError; both name the ``refine.saliency.backbone`` setting.
    """
    try:
        model = create_classifier(section.model_copy(update={"pretrained": None}), 0)
        weights = None
        if section.pretrained is not None:
            weights = load_pretrained(model, section.pretrained, allow_download=section.allow_download)
    except PretrainedWeightsError as error:
        raise PretrainedWeightsError(_backbone_message(error, section)) from error
    except (ValueError, AssertionError, TypeError) as error:  # an unknown timm name; timm's checks of the architecture
        raise ValueError(_backbone_message(error, section)) from error
    return model.eval().to(device), weights


def _backbone_message(error: Exception, section: ModelConfig) -> str:
    """The message of an error about a ``model`` section, told of ``refine.saliency.backbone``:
    model.name / model.pretrained / model.allow_download renamed, the setting named first."""
    text = _MODEL_SETTING.sub(f"{BACKBONE}.", str(error))
    return text if text.startswith(BACKBONE) else f"{BACKBONE} ({section.name}): {text}"


def saliency_source(config: SaliencyConfig, model: nn.Module | None = None, dataset: Dataset | None = None,
                    device: torch.device | str | None = None) -> SaliencySource:
    """The source that ``config`` (the ``refine.saliency`` section) names.

    tokencut runs on ``config.backbone`` when set (built here, on ``device``; None: the device
    of ``model``, else the CPU), otherwise on ``model`` (the classifier, a timm ViT); folder
    needs ``dataset`` (for the map paths).
    """
    if config.source == "none":
        return NoSaliency()
    if config.source == "segmenter":
        raise ValueError(
            "refine.saliency.source=segmenter: these maps are made by the pipeline's self-training step "
            "(wsss demo / wsss flow run pipeline writes RUN/self_training/saliency); to use them here, set "
            "refine.saliency.source=folder and data.saliency_dir=RUN/self_training/saliency")
    if config.source == "folder":
        if dataset is None:
            raise ValueError("refine.saliency.source=folder needs the data set (its saliency folder)")
        return FolderSaliency(dataset, threshold=config.threshold, missing=config.missing)
    if config.source == "tokencut":
        return _tokencut(config, model, device)
    raise ValueError(f"refine.saliency.source={config.source!r}: expected one of tokencut, folder, none")


def _tokencut(config: SaliencyConfig, model: nn.Module | None, device: torch.device | str | None) -> TokenCutSaliency:
    """TokenCut of the ``refine.saliency`` section: on its backbone when set, else on ``model``."""
    settings = dict(tau=config.tokencut_tau, eps=config.tokencut_eps, objects=config.tokencut_objects)
    if config.backbone is None:
        if model is None:
            raise ValueError("refine.saliency.source=tokencut needs the ViT model (or refine.saliency.backbone)")
        return TokenCutSaliency(model, **settings)
    if device is None:
        device = next(model.parameters()).device if model is not None else "cpu"
    backbone, weights = saliency_backbone(config.backbone, device)
    layout = "random" if weights is None else weights.layout
    return TokenCutSaliency(backbone, **settings, name=f"tokencut ({layout} backbone {config.backbone.name})")


def binarise_saliency(saliency: np.ndarray, size: Sequence[int], threshold: float) -> Tensor:
    """An H0×W0 float saliency map in [0, 1] → ``size`` H×W bool: resized with the image rule
    (``wsss.data.tensors.resize_image``), then salient where > ``threshold``. The one place
    saliency maps are resized and binarised (folder source, training crops, evaluation)."""
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float32))
    return torch.from_numpy(resize_image(saliency, (int(size[0]), int(size[1]))) > threshold)
