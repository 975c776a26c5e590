"""Shared fixtures: small real data sets written to disk."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two pytest workers side by side (pytest-xdist):
    os.environ["OMP_NUM_THREADS"] = "1"  # one thread each, and in every process a test starts, so the
    os.environ["MKL_NUM_THREADS"] = "1"  # two never share a core between four busy threads

import numpy as np
import pytest
from PIL import Image

from wsss.data.folder import write_folder_dataset_index
from wsss.data.label_png import write_label_png
from wsss.data.voc import VOC_CLASSES

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

CLASSES = ["disk", "square", "bar"]


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker():
    """Under pytest-xdist, one torch thread in this worker (test modules that set their own
    count at import have all been imported by now)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    yield


def draw_sample(rng: np.random.Generator, size: tuple[int, int], labels: list[int]):
    """An H×W×3 uint8 image with one filled rectangle per label, and its H×W uint8 mask."""
    h, w = size
    image = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    for k, label in enumerate(labels):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        y1, x1 = y0 + h // 3, x0 + w // 3
        image[y0:y1, x0:x1] = (80 * label) % 256, 200, 40 * k
        mask[y0:y1, x0:x1] = label
    return image, mask


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """A valid plain-folder data set: 6 images, 3 classes, masks, splits."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    tags = {}
    for i in range(6):
        labels = [1 + i % 3] if i < 3 else [1 + i % 3, 1 + (i + 1) % 3]
        image, mask = draw_sample(rng, (40, 48), labels)
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        write_label_png(root / "masks" / f"img{i}.png", mask)
        tags[f"img{i}.png"] = [CLASSES[label - 1] for label in sorted(set(labels))]
    write_folder_dataset_index(root, CLASSES, tags, {"train": ["img0", "img1", "img2", "img3"], "val": ["img4", "img5"]})
    return root


@pytest.fixture
def voc_dataset(tmp_path: Path) -> Path:
    """A VOC2012-layout folder: 20 images (one per class, some with two), XML for half of them."""
    rng = np.random.default_rng(1)
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    ids = []
    for i, name in enumerate(VOC_CLASSES):
        image_id = f"2007_{i:06d}"
        ids.append(image_id)
        labels = [i + 1] if i % 4 else [i + 1, (i + 5) % 20 + 1]
        image, mask = draw_sample(rng, (50, 64), labels)
        mask[0, :] = 255  # VOC's ignore border
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
        if i % 2 == 0:
            objects = "".join(f"<object><name>{VOC_CLASSES[label - 1]}</name></object>" for label in labels)
            (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{objects}</annotation>")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:14]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[14:]) + "\n")
    return root


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A temporary Prefect server (on 127.0.0.1) and home (results, cache records) for one test
    module; its API URL. Started once per module that asks for it, stopped after it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    with temporary_settings({PREFECT_HOME: str(home)}), prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()
