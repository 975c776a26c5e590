"""Maps for a whole data set: ``wsss cam``.

For each image: resize to the nearest multiple of the model's patch stride, compute the maps of
its tagged classes with one map method (batched: images of one size go together), upsample
back to the image's size, and write

    OUT/maps/<id>.npz        maps: K×H×W float16 (≥ 0, each divided by its max), classes: K int
                             (indices into the data set's class list), class_names: K str
    OUT/overlays/<id>_<class>.png   heat map on the image, one per tagged class
    OUT/manifest.jsonl       one line per image: {"id", "status": "ok"|"failed", "reason"}

Images whose .npz exists are skipped, so an interrupted run continues where it stopped; an
image that cannot be read is recorded as failed and the run goes on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss.attention.base import AttentionMapMethod
from wsss.data.base import Dataset
from wsss.data.batching import Manifest, same_size_batches
from wsss.data.tensors import image_to_tensor, resize_image
from wsss.models.attention_capture import token_layout
from wsss.viz import heatmap_overlay, save_png


def model_stride(model: torch.nn.Module) -> int:
    """Pixels per patch token along each side (e.g. 16 for */16; the CNN stride for hybrids)."""
    probe = 224
    h, _ = token_layout(model, (probe, probe)).grid
    return probe // h


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """…×H×W float ≥ 0 → each map divided by its max + 1e-5 (DESIGN step 4); NaN → 0."""
    maps = torch.nan_to_num(maps, nan=0.0).clamp_min(0)
    peak = maps.flatten(-2).amax(-1)[..., None, None]
    return maps / (peak + 1e-5)


def write_npz(path: Path, **arrays) -> None:
    """np.savez_compressed via a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dataset_maps(
    model: torch.nn.Module,
    method: AttentionMapMethod,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    overlays: bool = True,
    progress: bool = True,
) -> dict:
    """Compute and write maps for every image of ``dataset``; returns counts {ok, skipped, failed}."""
    out = Path(out_dir)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    stride = model_stride(model)
    with Manifest(out / "manifest.jsonl") as manifest:
        todo = manifest.unfinished(dataset.ids, lambda image_id: out / "maps" / f"{image_id}.npz")
        bar = tqdm(total=len(todo), desc=f"{method.name} maps", unit="img", disable=not progress)

        def failed(image_id: str, reason: str) -> None:
            manifest.record(image_id, "failed", reason)
            bar.update(1)

        for batch in same_size_batches(dataset, todo, batch_size, failed):
            size = model_input_size(batch[0].image.shape[:2], stride)
            images = torch.stack([image_to_tensor(resize_image(s.image, size)) for s in batch]).to(device)
            labels = torch.from_numpy(np.stack([s.tags for s in batch])).to(device)
            maps = method(model, images, labels).detach().float().cpu()
            for sample, sample_maps in zip(batch, maps):
                _write_sample(out, sample, sample_maps, dataset.classes, overlays)
                manifest.record(sample.id, "ok")
            bar.update(len(batch))
        bar.close()
        return dict(manifest.counts)


def model_input_size(shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """Model input size for an H×W image: each side rounded to a multiple of the stride."""
    h, w = shape
    return max(stride, round(h / stride) * stride), max(stride, round(w / stride) * stride)


def _write_sample(out: Path, sample, maps: torch.Tensor, class_names: list[str], overlays: bool) -> None:
    """maps: C×h×w float for one image → upsampled to the image size, normalised, written."""
    present = np.flatnonzero(sample.tags)
    H, W = sample.image.shape[:2]
    chosen = maps[present][None]
    if chosen.shape[-2:] != (H, W):
        chosen = F.interpolate(chosen, size=(H, W), mode="bilinear", align_corners=True)
    chosen = normalise_maps(chosen[0]).numpy()
    names = [class_names[c] for c in present]
    write_npz(out / "maps" / f"{sample.id}.npz", maps=chosen.astype(np.float16), classes=present.astype(np.int16),
              class_names=np.array(names))
    if overlays:
        for name, heat in zip(names, chosen):
            save_png(out / "overlays" / f"{sample.id}_{name}.png", heatmap_overlay(sample.image, heat))
