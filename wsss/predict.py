"""Segmenter inference: multi-scale + flip softmax averaging, optional dense CRF, palette PNGs.

    predictor = Predictor(segmenter, scales=(0.75, 1.0, 1.25), flip=True)
    probs = predictor([image, ...])          # B×(C+1)×H×W float in [0, 1], images of one size
    labels = probs_to_labels(images, probs, crf_config)   # H×W uint8 each: 0, 1..C

    predict_folder(predictor, "photos/", "out/")          # wsss predict: out/<stem>.png
    evaluate_segmenter(predictor, dataset)                # scores against the masks (with/without CRF)

Any image size: at each scale the image is resized to the nearest multiple of the model's
stride, and the softmax is resized back to the image (bilinear) before averaging.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from wsss.attention.base import eval_mode
from wsss.attention.dataset_maps import model_input_size
from wsss.data.base import Dataset, DatasetError
from wsss.data.batching import Manifest, same_size_batches
from wsss.data.images import IMAGE_EXTENSIONS, ImageReadError, read_rgb
from wsss.data.label_png import write_label_png
from wsss.data.tensors import image_to_tensor, resize_image
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.evaluate import Evaluation
from wsss.models.dpt import Segmenter
from wsss.refine.crf import crf_executor

__all__ = ["Predictor", "probs_to_labels", "predict_folder", "evaluate_segmenter", "SegmenterScores"]


class Predictor:
    """Averaged softmax of a Segmenter over input scales and a horizontal flip.

    scales: positive factors of the image size; flip: also run the mirrored input.
    """

    def __init__(self, segmenter: Segmenter, scales: Sequence[float] = (1.0,), flip: bool = True) -> None:
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be a non-empty list of positive factors, got {list(scales)}")
        self.segmenter, self.scales, self.flip = segmenter, [float(s) for s in scales], flip
        self.device = next(segmenter.parameters()).device

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> Tensor:
        """images: B arrays H×W×3 uint8 RGB of one size → B×(C+1)×H×W float probabilities (CPU)."""
        sizes = {image.shape[:2] for image in images}
        if len(sizes) != 1:
            raise ValueError(f"a batch must hold images of one size, got {sorted(sizes)}")
        (H, W), = sizes
        B, total = len(images), None
        with eval_mode(self.segmenter):
            for scale in self.scales:
                size = model_input_size((round(H * scale), round(W * scale)), self.segmenter.stride)
                x = torch.stack([image_to_tensor(resize_image(image, size)) for image in images]).to(self.device)
                if self.flip:
                    x = torch.cat([x, x.flip(-1)])
                probs = torch.softmax(self.segmenter(x).seg.float(), dim=1)
                if self.flip:
                    probs = probs[:B] + probs[B:].flip(-1)
                if probs.shape[-2:] != (H, W):
                    probs = F.interpolate(probs, size=(H, W), mode="bilinear", align_corners=False)
                total = probs if total is None else total + probs
        return (total / (len(self.scales) * (2 if self.flip else 1))).cpu()


def probs_to_labels(images: Sequence[np.ndarray], probs: Tensor, crf=None, executor=None) -> list[np.ndarray]:
    """B×(C+1)×H×W probabilities → B label maps H×W uint8 (0 background, 1..C): the argmax, or
    the dense CRF's labels on the RGB images when ``crf`` (a ``wsss.config.CrfConfig``) is given
    (in ``executor``, e.g. from ``wsss.refine.crf.crf_executor``, when one is given)."""
    if crf is None:
        return list(probs.argmax(dim=1).to(torch.uint8).numpy())
    from wsss.refine.crf import crf_label_maps

    refined = crf_label_maps(list(images), list(probs.numpy()), crf, executor=executor)
    return [label.astype(np.uint8) for label in refined]


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"--images {folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"--images {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def predict_folder(
    predictor: Predictor,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    crf=None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Write OUT/<stem>.png (VOC palette) for every image file of IMAGES_DIR (any sizes).

    Consecutive images of one size share a forward. An unreadable image is recorded in
    OUT/manifest.jsonl with its reason and the run goes on. Returns counts {ok, skipped, failed}.
    """
    out = Path(out_dir)
    files = _image_files(Path(images_dir))
    out.mkdir(parents=True, exist_ok=True)
    with Manifest(out / "manifest.jsonl") as manifest, crf_executor(crf) as executor:
        bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress)
        pending: list[tuple[str, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            images = [image for _, image in pending]
            for (stem, _), label in zip(pending, probs_to_labels(images, predictor(images), crf, executor)):
                write_label_png(out / f"{stem}.png", label)
                manifest.record(stem, "ok")
            bar.update(len(pending))
            pending.clear()

        for path in files:
            try:
                image = read_rgb(path)
            except (ImageReadError, FileNotFoundError) as error:
                manifest.record(path.stem, "failed", str(error))
                bar.update(1)
                continue
            if pending and pending[0][1].shape != image.shape:
                flush()
            pending.append((path.stem, image))
            if len(pending) == batch_size:
                flush()
        flush()
        bar.close()
        return dict(manifest.counts)


class SegmenterScores(NamedTuple):
    """final: the labels ``evaluate_segmenter`` writes (the CRF's when one was given, else the
    argmax); argmax: the argmax of the averaged probabilities (the same object without CRF)."""

    final: Evaluation
    argmax: Evaluation


def evaluate_segmenter(
    predictor: Predictor,
    dataset: Dataset,
    crf=None,
    batch_size: int = 8,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> SegmenterScores:
    """Score the predictions on every image of ``dataset`` against its masks, with and (when
    ``crf`` is given) without the CRF.

    out_dir: also write the final predictions there as <id>.png (for ``wsss evaluate`` or
    viewing). Images that cannot be read are listed in ``missing``; a data set without masks
    raises DatasetError.
    """
    argmax = Evaluation(ConfusionMatrix(dataset.num_classes + 1))
    final = argmax if crf is None else Evaluation(ConfusionMatrix(dataset.num_classes + 1))
    out = None if out_dir is None else Path(out_dir)
    bar = tqdm(total=len(dataset.ids), desc="evaluating segmenter", unit="img", disable=not progress)

    def failed(image_id: str, reason: str) -> None:
        argmax.missing[image_id] = final.missing[image_id] = reason
        bar.update(1)

    with crf_executor(crf) as executor:
        for batch in same_size_batches(dataset, dataset.ids, batch_size, failed, needs_tags=False):
            images = [sample.image for sample in batch]
            probs = predictor(images)
            plain = probs_to_labels(images, probs)
            labels = plain if crf is None else probs_to_labels(images, probs, crf, executor)
            for sample, label, plain_label in zip(batch, labels, plain):
                if sample.mask is None:
                    raise DatasetError(f"image {sample.id}: no mask to evaluate against")
                final.confusion.update(label, sample.mask)
                if crf is not None:
                    argmax.confusion.update(plain_label, sample.mask)
                if out is not None:
                    write_label_png(out / f"{sample.id}.png", label)
            bar.update(len(batch))
    bar.close()
    return SegmenterScores(final, argmax)
