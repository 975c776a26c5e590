"""Maps for a whole data set: ``wsss cam``.

For each image: resize to the nearest multiple of the model's patch stride, compute the maps of
its tagged classes with one map method (batched: images of one size go together), upsample
back to the image's size, and write

    OUT/maps/<id>.npz        maps: K×H×W float16 (≥ 0, each divided by its max), classes: K int
                             (indices into the data set's class list), class_names: K str
    OUT/overlays/<id>_<class>.png   heat map on the image, one per tagged class
    OUT/manifest.jsonl       one line per image: {"id", "status": "ok"|"failed", "reason"}

The walk is ``wsss.data.runner.run_dataset``: images whose .npz exists are skipped, an image
that cannot be read fails alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.attention.base import AttentionMapMethod
from wsss.attention.views import MultiViewMaps, normalise_maps
from wsss.data.base import Dataset, Sample
from wsss.data.runner import run_dataset
from wsss.files import atomic_path
from wsss.models.attention_capture import model_inputs, model_stride
from wsss.viz import heatmap_overlay, save_png

__all__ = ["write_dataset_maps", "write_npz", "read_npz_maps"]


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """np.savez_compressed, atomically (never a half-written file)."""
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def read_npz_maps(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A maps file of this module's layout → (K×H×W float32 maps, K int64 class indices).
    Raises ValueError naming the file when it is not such a file."""
    try:
        with np.load(path) as saved:
            maps, classes = saved["maps"].astype(np.float32), saved["classes"].astype(np.int64)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a maps file (.npz with 'maps' K×H×W and 'classes' K): {error}") from error
    if maps.ndim != 3 or classes.shape != (maps.shape[0],):
        raise ValueError(f"{path}: maps {maps.shape} and classes {classes.shape} do not form K×H×W and K")
    return maps, classes


def read_npz_probs(path: str | os.PathLike) -> np.ndarray | None:
    """The classifier's K probabilities of the tagged classes saved beside the maps ("probs",
    as ``wsss pseudo-label --save-maps`` writes them), or None when the file has none."""
    with np.load(path) as saved:
        return saved["probs"].astype(np.float32) if "probs" in saved.files else None


def write_dataset_maps(
    model: torch.nn.Module,
    method: AttentionMapMethod | MultiViewMaps,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    overlays: bool = True,
    progress: bool = True,
) -> dict:
    """Compute and write maps for every image of ``dataset``; returns counts {ok, skipped, failed}."""
    out = Path(out_dir)
    stride = model_stride(model)

    def compute(batch: list[Sample]) -> torch.Tensor:
        images = model_inputs(batch, stride).to(device)
        labels = torch.from_numpy(np.stack([s.tags for s in batch])).to(device)
        return method(model, images, labels).detach().float().cpu()

    def write(sample: Sample, maps: torch.Tensor) -> None:
        """maps: C×h×w float for one image → upsampled to the image size, normalised, written."""
        present = np.flatnonzero(sample.tags)
        H, W = sample.image.shape[:2]
        chosen = maps[present][None]
        if chosen.shape[-2:] != (H, W):
            chosen = F.interpolate(chosen, size=(H, W), mode="bilinear", align_corners=True)
        chosen = normalise_maps(chosen[0]).numpy()
        names = [dataset.classes[c] for c in present]
        write_npz(out / "maps" / f"{sample.id}.npz", maps=chosen.astype(np.float16), classes=present.astype(np.int16),
                  class_names=np.array(names))
        if overlays:
            for name, heat in zip(names, chosen):
                save_png(out / "overlays" / f"{sample.id}_{name}.png", heatmap_overlay(sample.image, heat))

    (out / "maps").mkdir(parents=True, exist_ok=True)
    return run_dataset(dataset, compute, write, out_dir=out, finished=lambda i: out / "maps" / f"{i}.npz",
                       batch_size=batch_size, desc=f"{method.name} maps", progress=progress)
