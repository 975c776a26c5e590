"""The cam and saliency steps: a map per image of a data set, into a folder.

    counts = write_maps(config, checkpoint, split, out)          # OUT/maps/<id>.npz, OUT/overlays/
    counts = write_saliency(config, checkpoint, split, out)      # OUT/<id>.png, 0/255 (TokenCut)

Both record what made the folder (source.json: a folder of other settings is refused), skip
finished images and record every outcome in OUT/manifest.jsonl; a second run on the same folder
is refused while one holds it.
"""

from __future__ import annotations

import os

from wsss.attention import check_map_settings, configured_map_method
from wsss.config import Config
from wsss.data import open_dataset
from wsss.data.base import Dataset, DatasetError
from wsss.lifetime import hold_folder
from wsss.models.checkpoint import load_classifier, resolve_device
from wsss.refine.saliency import saliency_source
from wsss.steps.provenance import claim_output_dir, maps_source, saliency_maps_source
from wsss.steps.worker_cache import checkpoint_digest
from wsss.writers.attention_maps import write_dataset_maps
from wsss.writers.saliency_pngs import write_saliency_maps

__all__ = ["write_maps", "write_saliency", "classifier_dataset"]


def classifier_dataset(classes: list[str], config: Config, split: str | None, checkpoint) -> Dataset:
    """The data set of ``config.data`` / ``split``, checked to have the checkpoint's ``classes``."""
    dataset = open_dataset(config.data, split)
    if dataset.classes != classes:
        raise DatasetError(f"{config.data.root}: classes {dataset.classes} differ from those of {checkpoint}: "
                           f"{classes}")
    return dataset


def write_maps(config: Config, checkpoint: str | os.PathLike, split: str | None, out: str | os.PathLike,
               method: str | None = None, overlays: bool = True) -> dict:
    """Maps of ``method`` (None: ``cam.method``; the ``cam`` views and batch size) from the
    classifier at ``checkpoint`` for every image of ``config.data`` / ``split``; returns the
    counts {ok, skipped, failed}."""
    method = method or config.cam.method
    with hold_folder(out):
        model, classes, _ = load_classifier(checkpoint, resolve_device(config.train.device))
        check_map_settings(config.cam, model, method, f"the classifier {checkpoint}")  # before the folder is claimed
        dataset = classifier_dataset(classes, config, split, checkpoint)
        claim_output_dir(out, maps_source(checkpoint_digest(checkpoint), config.cam, method, config.data))
        return write_dataset_maps(model, configured_map_method(config.cam, method), dataset, out,
                                  batch_size=config.cam.batch_size, device=resolve_device(config.train.device),
                                  overlays=overlays)


def write_saliency(config: Config, checkpoint: str | os.PathLike, split: str | None, out: str | os.PathLike,
                   objects: int | None = None) -> tuple[str, dict]:
    """TokenCut saliency (``refine.saliency``: tau, eps; ``objects`` MaskCut-style repeats, None:
    ``tokencut_objects``) for every image of ``config.data`` / ``split``, cut on the keys of
    ``refine.saliency.backbone`` when set, else of the classifier at ``checkpoint``. Returns the
    source's name and the counts {ok, skipped, failed}."""
    objects = config.refine.saliency.tokencut_objects if objects is None else objects
    if objects < 1:
        raise ValueError(f"--objects {objects}: expected at least 1")
    settings = config.refine.saliency.model_copy(update={"source": "tokencut", "tokencut_objects": objects})
    device = resolve_device(config.train.device)
    with hold_folder(out):
        dataset = open_dataset(config.data, split)
        model = load_classifier(checkpoint, device)[0] if settings.backbone is None else None
        source = saliency_source(settings, model=model, device=device)
        digest = None if model is None else checkpoint_digest(checkpoint)
        claim_output_dir(out, saliency_maps_source(digest, settings, objects, config.data))
        counts = write_saliency_maps(source, dataset, out, batch_size=config.cam.batch_size, device=device)
    return source.name, counts
