"""The walk that writes attention maps for a whole data set: ``wsss cam``.

For each image: resize to the nearest multiple of the model's patch stride, compute the maps of
its tagged classes with one map method (batched: images of one size go together), upsample
back to the image's size, and write

    OUT/maps/<id>.npz        maps: K×H×W float16 (≥ 0, each divided by its max), classes: K int
                             (indices into the data set's class list), class_names: K str
    OUT/overlays/<id>_<class>.png   heat map on the image, one per tagged class
    OUT/manifest.jsonl       one line per image: {"id", "status": "ok"|"failed", "reason"}

The walk is ``wsss.data.dataset_walk.run_dataset``: images whose .npz exists are skipped, an image
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
from wsss.data.dataset_walk import Walk, WalkFiles, run_dataset
from wsss.data.npz_maps import write_npz
from wsss.models.vit_geometry import model_inputs, model_stride
from wsss.viz import heatmap_overlay, save_png

__all__ = ["write_dataset_maps"]


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
        if overlays:  # before the maps file, which marks the image finished
            for name, heat in zip(names, chosen):
                save_png(out / "overlays" / f"{sample.id}_{name}.png", heatmap_overlay(sample.image, heat))
        write_npz(out / "maps" / f"{sample.id}.npz", maps=chosen.astype(np.float16), classes=present.astype(np.int16),
                  class_names=np.array(names))

    (out / "maps").mkdir(parents=True, exist_ok=True)
    walk = Walk(batch_size=batch_size, desc=f"{method.name} maps", progress=progress)
    return run_dataset(dataset, compute, write, walk, WalkFiles(out, "maps/{}.npz"))
