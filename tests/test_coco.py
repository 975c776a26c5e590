"""data.format: coco — a COCO instances JSON over a folder of images, written to disk here:
classes, tags, rasterised masks (polygons, both RLE forms, crowd, overlaps), min_area, the
errors, the split rule, and `wsss data check` / `pseudo-label` / `evaluate` on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wsss.cli import main
from wsss.config import ConfigError, load_config
from wsss.data import DatasetError, detect_format, open_dataset
from wsss.data.coco import CocoDataset, compressed_rle_total
from wsss.data.label_png import read_label_png
from wsss.eval.check import check_dataset
from tests.runs import classifier_of

# category ids out of order: the classes are sorted by id → cat (1), dog (2), kite (3)
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 11, "name": "kite"}]
CAT, DOG, KITE = 2, 7, 11
COLOURS = {CAT: (220, 40, 40), DOG: (40, 220, 40), KITE: (40, 40, 220)}


def box(x0, y0, x1, y1) -> list[float]:
    """A rectangle polygon [x, y, ...] (COCO's pixel-edge coordinates)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def rect_mask(h, w, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


class Writer:
    """Images drawn with numpy (a coloured patch per annotation) and the instances JSON."""

    def __init__(self, root: Path):
        self.images_dir = root / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.rng = np.random.default_rng(0)

    def image(self, file_name: str, h: int, w: int, anns=(), json_size=None, write=True) -> int:
        """anns: (category id, segmentation, pixel mask for the drawing, extra fields)."""
        image_id = len(self.images) + 1
        pixels = self.rng.integers(0, 50, size=(h, w, 3), dtype=np.uint8)
        for category, segmentation, drawn, extra in anns:
            pixels[drawn.astype(bool)] = COLOURS[category]
            self.annotations.append({"id": len(self.annotations) + 100, "image_id": image_id,
                                     "category_id": category, "segmentation": segmentation,
                                     "area": float(drawn.sum()), "iscrowd": 0, **extra})
        jh, jw = json_size or (h, w)
        self.images.append({"id": image_id, "file_name": file_name, "height": jh, "width": jw})
        if write:
            path = self.images_dir / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, quality=95)
        return image_id

    def polygon(self, file_name, h, w, *rects, **kwargs):
        """One polygon annotation per (category, y0, y1, x0, x1)."""
        anns = [(c, [box(x0, y0, x1, y1)], rect_mask(h, w, y0, y1, x0, x1), {}) for c, y0, y1, x0, x1 in rects]
        return self.image(file_name, h, w, anns, **kwargs)

    def write(self, name: str = "instances_train.json", categories=CATEGORIES, images=None) -> Path:
        path = self.root / name
        data = {"images": self.images if images is None else images, "annotations": self.annotations,
                "categories": categories}
        path.write_text(json.dumps(data))
        return path


def standard_set(root: Path, untagged: bool = True, extra: int = 4) -> tuple[Path, Path]:
    """(images folder, JSON): a (polygons overlapping, crowd RLE), sub/b.jpg (compressed RLE, a
    4-pixel cat), c (no annotations, when ``untagged``), d, and ``extra`` images of one or two classes."""
    wr = Writer(root)
    h, w = 48, 64
    crowd = rect_mask(h, w, 30, 44, 46, 60)
    wr.image("a.png", h, w, [
        (CAT, [box(4, 4, 24, 24)], rect_mask(h, w, 4, 24, 4, 24), {}),
        (DOG, [box(16, 16, 40, 40)], rect_mask(h, w, 16, 40, 16, 40), {}),
        (KITE, uncompressed_rle(crowd), crowd, {"iscrowd": 1}),
    ])
    bh, bw = 40, 56
    dog = rect_mask(bh, bw, 5, 30, 10, 40)
    wr.image("sub/b.jpg", bh, bw, [
        (DOG, compressed_rle(dog), dog, {}),
        (CAT, [box(48, 32, 50, 34)], rect_mask(bh, bw, 32, 34, 48, 50), {}),
    ])
    if untagged:
        wr.image("c.png", 32, 32)
    wr.polygon("d.png", h, w, (CAT, 4, 20, 4, 28), (KITE, 26, 44, 30, 60))
    for i in range(extra):
        first, second = [CAT, DOG, KITE][i % 3], [CAT, DOG, KITE][(i + 1) % 3]
        rects = [(first, 6, 26, 6, 30)] + ([(second, 28, 44, 34, 58)] if i % 2 else [])
        wr.polygon(f"e{i}.png", h, w, *rects)
    return wr.images_dir, wr.write()


def test_classes_tags_and_masks(tmp_path):
    images, annotations = standard_set(tmp_path)
    skipping = CocoDataset(images, annotations)  # the default: images without any annotation are left out
    assert "c" not in skipping.ids and skipping.unannotated == ["c"]
    dataset = CocoDataset(images, annotations, unannotated="keep")
    assert dataset.classes == ["cat", "dog", "kite"]
    assert dataset.ids[:4] == ["a", "b", "c", "d"] and dataset.split == "instances_train"
    assert dataset.image_path("b") == images / "sub" / "b.jpg"
    assert dataset.tag_names("a") == ["cat", "dog", "kite"]  # the crowd kite is a tag
    assert dataset.tag_names("b") == ["cat", "dog"] and dataset.tag_names("c") == []

    mask = dataset.read_mask("a")
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert mask[10, 10] == 1  # inside the cat polygon only
    assert mask[30, 30] == 2  # inside the dog polygon only
    assert mask[20, 20] == 255  # cat and dog overlap
    assert mask[36, 52] == 255  # the crowd region
    assert mask[2, 60] == 0 and mask[46, 2] == 0  # background
    b = dataset.read_mask("b")
    assert b.shape == (40, 56) and b[15, 20] == 2 and b[2, 2] == 0  # the compressed RLE
    assert np.count_nonzero(b == 1) >= 1  # the 4-pixel cat polygon
    assert not dataset.read_mask("c").any()
    d = dataset.read_mask("d")
    assert d[10, 10] == 1 and d[35, 45] == 3

    sample = dataset.load("a")
    assert sample.image.shape == (48, 64, 3) and np.array_equal(sample.mask, mask)
    assert sample.tags.tolist() == [1.0, 1.0, 1.0]
    assert dataset.load("a", masks=False).mask is None
    assert dataset.load("c").tags.tolist() == [0.0, 0.0, 0.0]

    small = CocoDataset(images, annotations, min_area=10)  # the 4-pixel cat is no tag any more
    assert small.tag_names("b") == ["dog"] and small.tag_names("a") == ["cat", "dog", "kite"]
    assert np.array_equal(small.read_mask("b"), b)  # masks keep it


def test_compressed_rle_total_matches_pycocotools():
    rng = np.random.default_rng(3)
    for shape in [(5, 7), (40, 56), (300, 200)]:
        mask = (rng.random(shape) > 0.6).astype(np.uint8)
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"]
        assert compressed_rle_total(counts) == shape[0] * shape[1]
    assert compressed_rle_total(b"0?") == 15  # runs 0, 15
    for bad in (b"\x00", b"0p", b"0P", b"@"):  # a NUL, a character over 63, a truncated run, a negative run
        assert compressed_rle_total(bad) is None


def _one_image(tmp_path, file_name="x.png", segmentation=None, json_size=None, categories=CATEGORIES):
    wr = Writer(tmp_path)
    h, w = 20, 30
    anns = [] if segmentation is None else [(CAT, segmentation, rect_mask(h, w, 2, 8, 2, 8), {})]
    wr.image(file_name, h, w, anns, json_size=json_size)
    return wr.images_dir, wr.write(categories=categories)


def test_errors(tmp_path):
    wr = Writer(tmp_path / "dup")
    wr.polygon("x.png", 20, 30, (CAT, 2, 8, 2, 8))
    wr.polygon("sub/x.jpg", 20, 30, (DOG, 2, 8, 2, 8))
    with pytest.raises(DatasetError, match=r"x\.png and sub/x\.jpg share the id 'x'"):
        CocoDataset(wr.images_dir, wr.write())

    images, annotations = _one_image(tmp_path / "up", file_name="../x.png")
    with pytest.raises(DatasetError, match="outside the images folder"):
        CocoDataset(images, annotations)

    images, annotations = _one_image(tmp_path / "names", categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}])
    with pytest.raises(DatasetError, match="duplicate category names"):
        CocoDataset(images, annotations)

    images, annotations = _one_image(tmp_path / "size", segmentation=[box(2, 2, 8, 8)], json_size=(20, 32))
    dataset = CocoDataset(images, annotations)
    with pytest.raises(DatasetError, match=r"32×20 in the JSON but 30×20"):
        dataset.read_mask("x")
    with pytest.raises(DatasetError, match="in the JSON but"):
        dataset.load("x")
    assert any("in the JSON but" in p.message for p in check_dataset(dataset, progress=False).errors)

    bad_rle = {"size": [20, 30], "counts": [5, 10]}
    images, annotations = _one_image(tmp_path / "rle", segmentation=bad_rle)
    with pytest.raises(DatasetError, match="sum to 15, not 20×30"):
        CocoDataset(images, annotations).read_mask("x")
    other_size = compressed_rle(np.zeros((21, 30), np.uint8))
    images, annotations = _one_image(tmp_path / "rle2", segmentation=other_size)
    with pytest.raises(DatasetError, match=r"RLE size \[21, 30\]"):
        CocoDataset(images, annotations).read_mask("x")
    images, annotations = _one_image(tmp_path / "poly", segmentation=[[1, 2, 3, 4]])
    with pytest.raises(DatasetError, match="at least 3 x, y pairs"):
        CocoDataset(images, annotations).read_mask("x")

    wr = Writer(tmp_path / "ghost")
    wr.polygon("here.png", 20, 30, (CAT, 2, 8, 2, 8))
    wr.polygon("ghost.png", 20, 30, (DOG, 2, 8, 2, 8), write=False)
    dataset = CocoDataset(wr.images_dir, wr.write())
    with pytest.raises(FileNotFoundError):
        dataset.load("ghost")
    report = check_dataset(dataset, progress=False)
    assert any(p.message == "image file missing" and p.where.endswith("ghost.png") for p in report.errors)

    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read the COCO annotations JSON"):
        CocoDataset(wr.images_dir, tmp_path / "broken.json")
    with pytest.raises(DatasetError, match="annotations file not found"):
        CocoDataset(wr.images_dir, tmp_path / "missing.json")


def test_config_and_split_rule(tmp_path):
    images, annotations = standard_set(tmp_path / "train", extra=0)
    val_images, val_annotations = standard_set(tmp_path / "val", untagged=False, extra=1)
    with pytest.raises(ConfigError, match="data.coco_annotations"):
        load_config(None, ["data.format=coco", f"data.root={images}"])
    with pytest.raises(DatasetError, match="--format coco --annotations"):
        detect_format(images)  # a COCO images folder is not guessed
    data = load_config(None, ["data.format=coco", f"data.root={images}", f"data.coco_annotations={annotations}"]).data
    assert open_dataset(data, "train").ids == open_dataset(data, "val").ids == open_dataset(data, None).ids
    data = load_config(None, ["data.format=coco", f"data.root={images}", f"data.coco_annotations={annotations}",
                              f"data.coco_val_annotations={val_annotations}",
                              f"data.coco_val_root={val_images}", "data.coco_min_area=10"]).data
    train, val = open_dataset(data, "train"), open_dataset(data, "val")
    assert train.root == images and val.root == val_images and "c" not in train.ids and "e0" in val.ids
    assert train.tag_names("b") == ["dog"]  # data.coco_min_area
    with pytest.raises(DatasetError, match="one split per annotations file"):
        open_dataset(data, "test")


def test_cli_check_pseudo_label_evaluate(tmp_path, capsys):
    images, annotations = standard_set(tmp_path / "coco")
    coco_args = ["--format", "coco", "--annotations", str(annotations)]
    assert main(["data", "check", str(images), *coco_args, "--quiet"]) == 0  # c (no annotation) is left out
    text = capsys.readouterr().out
    assert "1 image(s) left out: no annotation in the JSON" in text and "images: 7   with mask: 7" in text
    assert main(["data", "check", str(images), *coco_args, "--quiet", "--set", "data.coco_unannotated=keep"]) == 1
    text = capsys.readouterr().out
    assert "c: no tags" in text and "(coco" in text and "images: 8   with mask: 8" in text
    clean_images, clean = standard_set(tmp_path / "clean", untagged=False)
    assert main(["data", "check", str(clean_images), "--annotations", str(clean), "--quiet"]) == 0  # auto: coco
    assert main(["data", "check", str(images), "--format", "coco"]) == 2
    assert "--annotations" in capsys.readouterr().err

    config = load_config(None, [
        f"run_dir={tmp_path / 'run'}", "data.format=coco", f"data.root={images}",
        f"data.coco_annotations={annotations}", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=2", "model.num_heads=2", "train.classifier.epochs=1", "train.classifier.batch_size=8",
        "train.classifier.warmup_epochs=0"])
    checkpoint = classifier_of(config, progress=False)
    out = tmp_path / "labels"
    # c has no tags: it fails (its manifest entry says so), the others are labelled and scored
    assert main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(images), *coco_args,
                 "--out", str(out), "--set", "refine.saliency.source=none", "--set", "refine.label.opening=3"]) == 0
    dataset = CocoDataset(images, annotations)
    assert "c" not in dataset.ids and not (out / "c.png").exists()  # no annotation: left out
    for image_id in dataset.ids:
        label = read_label_png(out / f"{image_id}.png")
        sample = dataset.load(image_id, masks=False)
        assert label.shape == sample.image.shape[:2]
        assert set(np.unique(label).tolist()) <= {0, 255} | {c + 1 for c in np.flatnonzero(sample.tags)}
    assert json.loads((out / "evaluation.json").read_text())["not_scored"] == 0

    scores = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(out), "--dataset", str(images), *coco_args, "--json", str(scores)]) == 0
    assert 0.0 <= json.loads(scores.read_text())["mIoU"] <= 1.0
    assert main(["evaluate", "--pred", str(out), "--dataset", str(images), *coco_args, "--split", "val"]) == 2
    assert "instances_train" in capsys.readouterr().err
