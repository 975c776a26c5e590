"""Saliency sources for the pseudo-label rule (DESIGN step 5): where "foreground" may be.

One interface, chosen by ``refine.saliency.source``:

    folder    maps from the data set's saliency folder (DATASET/saliency/<id>.png or
              data.saliency_dir): any size, resized to the output size, salient where > threshold
    tokencut  built in: normalized cut on the ViT's last-block keys (wsss.refine.tokencut)
    none      no saliency: the label rule takes the background from α alone

    source = saliency_source(config.refine.saliency, model=model, dataset=dataset)
    masks = source(samples, images)      # list of B entries: H×W bool tensor, or None

    # tokencut without a second forward: record the keys during the forward GETAM runs
    with AttentionCapture(model, ...) as cap, KeyCapture(model) as capture:
        logits = model(images)
        keys = capture.keys          # B×N×D; dropped when the context exits
    masks = source.from_keys(keys, token_layout(model, images.shape[-2:]), sizes)

Per batch the pseudo-label chain passes the batch's ``Sample`` objects (or ids) and, for
tokencut, the model input ``B×3×h×w``. Output size of each entry: ``size`` when given, else
the sample's image size (for a ``Sample``), else the input's h×w. Entries are on the device of
``images`` (CPU without images). ``None`` means "no saliency for this image": always for
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
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.images import read_gray01
from wsss.models.attention_capture import TokenLayout
from wsss.refine.tokencut import grid_to_image, last_block_keys, normalized_cut

__all__ = ["SaliencySource", "NoSaliency", "FolderSaliency", "TokenCutSaliency", "saliency_source",
           "write_saliency_maps"]

Item = Sample | str


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

    def binarise(self, saliency: np.ndarray, size: Sequence[int]) -> Tensor:
        """H0×W0 float map in [0, 1] → size H×W bool (resized, then > threshold)."""
        H, W = int(size[0]), int(size[1])
        saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float32))
        if saliency.shape != (H, W):
            shrink = H < saliency.shape[0] or W < saliency.shape[1]
            saliency = cv2.resize(saliency, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return torch.from_numpy(saliency > self.threshold)

    def compute(self, samples, images, sizes):
        maps = [self.read(item) for item in samples]
        return [None if m is None else self.binarise(m, s) for m, s in zip(maps, sizes)]

    def __repr__(self) -> str:
        return f"FolderSaliency(threshold={self.threshold}, missing={self.missing!r})"


class TokenCutSaliency(SaliencySource):
    """``tokencut``: normalized cut on the model's last-block keys (wsss.refine.tokencut).

    Needs the model input ``images`` (B×3×h×w, h and w multiples of the model's stride). A chain
    that already ran a forward inside ``KeyCapture`` can call ``from_keys`` instead and save the
    second forward. Works best with self-supervised (DINO) weights; on a classifier trained from
    the data set's tags it is weaker (see wsss.refine.tokencut).
    """

    name = "tokencut"

    def __init__(self, model: nn.Module, tau: float = 0.2, eps: float = 1e-5, objects: int = 1) -> None:
        if objects < 1:
            raise ValueError(f"objects={objects}: expected at least 1")
        self.model, self.tau, self.eps, self.objects = model, tau, eps, objects

    def compute(self, samples, images, sizes):
        if images is None:
            raise ValueError("the tokencut saliency source needs the model input images (B×3×h×w)")
        keys, layout = last_block_keys(self.model, images)
        return self._cut(keys, layout.grid, sizes)

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
        return f"TokenCutSaliency(tau={self.tau}, eps={self.eps}, objects={self.objects})"


def saliency_source(config, model: nn.Module | None = None, dataset: Dataset | None = None) -> SaliencySource:
    """The source that ``config`` (a ``wsss.config.SaliencyConfig``) names.

    tokencut needs ``model`` (a timm ViT); folder needs ``dataset`` (for the map paths).
    """
    if config.source == "none":
        return NoSaliency()
    if config.source == "folder":
        if dataset is None:
            raise ValueError("refine.saliency.source=folder needs the data set (its saliency folder)")
        return FolderSaliency(dataset, threshold=config.threshold, missing=config.missing)
    if config.source == "tokencut":
        if model is None:
            raise ValueError("refine.saliency.source=tokencut needs the ViT model")
        return TokenCutSaliency(model, tau=config.tokencut_tau, eps=config.tokencut_eps,
                                objects=config.tokencut_objects)
    raise ValueError(f"refine.saliency.source={config.source!r}: expected one of tokencut, folder, none")


def _write_png_atomic(path: Path, mask: np.ndarray) -> None:
    """H×W bool → 0/255 grayscale PNG via a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_saliency_maps(
    source: SaliencySource,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """Write ``OUT/<id>.png`` (0/255 at the image's size) for every image of ``dataset``.

    Existing PNGs are skipped; an image that cannot be read or processed is recorded as failed
    in ``OUT/manifest.jsonl`` ({"id", "status", "reason"}) and the run goes on. Images of one
    size are batched; each is resized to the nearest multiple of the model's stride first.
    Returns counts {ok, skipped, failed}.
    """
    from wsss.attention.dataset_maps import model_input_size, model_stride
    from wsss.data.batching import Manifest, same_size_batches
    from wsss.data.tensors import image_to_tensor, resize_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stride = model_stride(source.model) if isinstance(source, TokenCutSaliency) else 1
    with Manifest(out / "manifest.jsonl") as manifest:
        todo = manifest.unfinished(dataset.ids, lambda image_id: out / f"{image_id}.png")
        bar = tqdm(total=len(todo), desc=f"{source.name} saliency", unit="img", disable=not progress)

        def failed(image_id: str, reason: str) -> None:
            manifest.record(image_id, "failed", reason)
            bar.update(1)

        def write(batch: list[Sample]) -> None:
            size = model_input_size(batch[0].image.shape[:2], stride)
            try:
                images = torch.stack([image_to_tensor(resize_image(s.image, size)) for s in batch]).to(device)
                masks = source(batch, images)
            except (ValueError, RuntimeError) as error:  # RuntimeError: e.g. eigh not converging
                if len(batch) > 1:  # find the image that fails: retry one at a time
                    for sample in batch:
                        write([sample])
                    return
                failed(batch[0].id, f"{type(error).__name__}: {error}")
                return
            for sample, mask in zip(batch, masks):
                if mask is None:
                    failed(sample.id, "no saliency for this image")
                    continue
                _write_png_atomic(out / f"{sample.id}.png", mask.cpu().numpy())
                manifest.record(sample.id, "ok")
                bar.update(1)

        for batch in same_size_batches(dataset, todo, batch_size, failed, needs_tags=False):
            write(batch)
        bar.close()
        return dict(manifest.counts)
