"""The walk that writes saliency maps for a whole data set: ``wsss saliency``.

    OUT/<id>.png          0/255 at the image's size (255 = salient)
    OUT/manifest.jsonl    every image's outcome
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from wsss.data.base import Dataset, Sample
from wsss.data.dataset_walk import SampleFailed, Walk, WalkFiles, run_dataset
from wsss.data.label_png import write_mask_png
from wsss.data.size_limit import at_source_size
from wsss.models.vit_geometry import model_inputs
from wsss.refine.saliency import SaliencySource, TokenCutSaliency

__all__ = ["write_saliency_maps"]


def write_saliency_maps(
    source: SaliencySource,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """Write ``OUT/<id>.png`` (0/255 at the image's size) for every image of ``dataset``.

    The walk is ``wsss.data.dataset_walk.run_dataset`` (existing PNGs skipped, failures recorded in
    ``OUT/manifest.jsonl``). Images of one size are batched; each is resized to the nearest
    multiple of the stride of TokenCut's model (the classifier's or its backbone's) first.
    Returns counts {ok, skipped, failed}.
    """
    out = Path(out_dir)
    stride = source.stride if isinstance(source, TokenCutSaliency) else 1

    def compute(batch: list[Sample]) -> list[Tensor | None]:
        return source(batch, model_inputs(batch, stride).to(device))

    def write(sample: Sample, mask: Tensor | None) -> None:
        if mask is None:
            raise SampleFailed("no saliency for this image")
        write_mask_png(out / f"{sample.id}.png", at_source_size(mask.cpu().numpy(), sample))

    walk = Walk(batch_size=batch_size, desc=f"{source.name} saliency", progress=progress, needs_tags=False)
    return run_dataset(dataset, compute, write, walk, WalkFiles(out))
