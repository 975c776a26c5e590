"""``wsss pseudo-label``: the chain over a whole data set, written to disk.

    OUT/<id>.png          pseudo-label, VOC palette (0 background, 1..C, 255 ignore), atomic write
    OUT/maps/<id>.npz     optional: refined maps of the tagged classes (as ``wsss cam`` writes them)
    OUT/manifest.jsonl    every image's outcome {"id", "status": "ok"|"failed", "reason"}

Images whose PNG exists are skipped, so a re-run finishes an interrupted one; an image that
cannot be read fails alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.attention.dataset_maps import write_npz
from wsss.data.base import Dataset
from wsss.data.batching import Manifest, same_size_batches
from wsss.data.label_png import write_label_png
from wsss.refine.chain import PseudoLabeler


def label_dataset(
    labeler: PseudoLabeler,
    dataset: Dataset,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    save_maps: bool = False,
    ids: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Write pseudo-labels for ``ids`` (default: every image); returns counts {ok, skipped, failed}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with Manifest(out / "manifest.jsonl") as manifest:
        todo = manifest.unfinished(ids if ids is not None else dataset.ids, lambda image_id: out / f"{image_id}.png")
        bar = tqdm(total=len(todo), desc="pseudo-labels", unit="img", disable=not progress)

        def failed(image_id: str, reason: str) -> None:
            manifest.record(image_id, "failed", reason)
            bar.update(1)

        for batch in same_size_batches(dataset, todo, batch_size, failed):
            result = labeler(batch)
            for i, sample in enumerate(batch):
                if save_maps:
                    present = np.flatnonzero(sample.tags)
                    write_npz(out / "maps" / f"{sample.id}.npz", maps=result.refined[i, present].numpy().astype(np.float16),
                              classes=present.astype(np.int16), class_names=np.array([dataset.classes[c] for c in present]))
                write_label_png(out / f"{sample.id}.png", result.labels[i])
                manifest.record(sample.id, "ok")
            bar.update(len(batch))
        bar.close()
        return dict(manifest.counts)
