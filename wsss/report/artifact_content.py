"""The content of the flows' Prefect artifacts: evaluation tables and example overlays.

Pure functions: they build rows and Markdown; the flows hand them to
``create_table_artifact`` / ``create_markdown_artifact``. Pictures are inlined as small PNG
data URIs (the Prefect UI renders them; no file server needed).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsss.data.base import Dataset
from wsss.data.label_png import read_label_png
from wsss.viz import label_overlay


def evaluation_rows(scores: dict) -> list[dict]:
    """``Evaluation.to_dict`` output → one row per class (IoU, precision, recall in percent) and
    a last row with the mean IoU and pixel accuracy."""

    def percent(value):
        return None if value is None else round(100.0 * value, 1)

    rows = [
        {"class": name, "IoU %": percent(iou), "precision %": percent(scores["precision"][name]),
         "recall %": percent(scores["recall"][name])}
        for name, iou in scores["IoU"].items()
    ]
    rows.append({"class": "mean", "IoU %": percent(scores["mIoU"]),
                 "precision %": None, "recall %": f"pixel accuracy {percent(scores['pixel_accuracy'])}"})
    return rows


def _data_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    interpolation = cv2.INTER_AREA if height < h else cv2.INTER_NEAREST
    return cv2.resize(image, (width, height), interpolation=interpolation)


def examples_markdown(
    dataset: Dataset, label_dir: str | os.PathLike, ids: list[str], title: str, height: int = 96
) -> str:
    """Markdown with, per id, the image beside its label overlay (and the ground truth overlay
    when the data set has masks), ``height`` pixels high, and the image's tags."""
    label_dir = Path(label_dir)
    lines = [f"# {title}", "", f"Labels in `{label_dir}`; colours: VOC palette, cream = ignore.", ""]
    for image_id in ids:
        sample = dataset.load(image_id)
        label = read_label_png(label_dir / f"{image_id}.png")
        panels = [sample.image, label_overlay(sample.image, label)]
        if sample.mask is not None:
            panels.append(label_overlay(sample.image, sample.mask))
        strip = np.concatenate([_thumbnail(p, height) for p in panels], axis=1)
        tags = ", ".join(dataset.classes[c] for c in np.flatnonzero(sample.tags))
        caption = "image | pseudo-label" + (" | ground truth" if sample.mask is not None else "")
        lines += [f"**{image_id}** ({tags}): {caption}", "", f"![{image_id}]({_data_uri(strip)})", ""]
    if not ids:
        lines.append("(no labelled images yet)")
    return "\n".join(lines)
