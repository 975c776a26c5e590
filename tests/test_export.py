"""`wsss export`: label PNGs → COCO instances JSON, read back with pycocotools and compared
pixel for pixel with the PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from wsss.cli import main
from wsss.data.coco_export import coco_summary, labels_to_coco, write_coco
from wsss.data.folder import FolderDataset, write_folder_dataset_index
from wsss.data.label_png import write_label_png

CLASSES = ["disk", "square", "bar"]


def _two_regions_label() -> np.ndarray:
    """30×40: disk in two separate blocks, square touching the first block (and a ring of
    disk around a square hole), bar as a diagonal pair (one 8-connected region) plus a lone
    pixel, ignore pixels here and there."""
    label = np.zeros((30, 40), dtype=np.uint8)
    label[2:6, 3:9] = 1          # disk region A: rows 2..5, cols 3..8 → bbox [3, 2, 6, 4], area 24
    label[2:6, 9:12] = 2         # square, touching region A on its right
    label[14:22, 20:28] = 1      # disk region B: a ring ...
    label[16:20, 22:26] = 2      # ... around a square (second square region, touching the ring inside)
    label[10, 10] = 3            # bar: a diagonal pair, one 8-connected region
    label[11, 11] = 3
    label[27, 37] = 3            # bar: a lone pixel
    label[0, :] = 255            # ignore: a border row
    label[3, 5] = 255            # ignore inside region A (a hole in it)
    return label


@pytest.fixture
def export_case(tmp_path: Path):
    """A folder data set of four images (one in a sub-folder of images/) and label PNGs for
    three of them: several regions per class, touching classes, ignore pixels, an image of
    background only; the fourth image has no label."""
    root = tmp_path / "data"
    (root / "images" / "sub").mkdir(parents=True)
    labels = tmp_path / "labels"
    sizes = {"many": (30, 40), "empty": (12, 16), "nested": (20, 24), "unlabelled": (8, 8)}
    names = {"many": "many.png", "empty": "empty.jpg", "nested": "sub/nested.png", "unlabelled": "unlabelled.png"}
    for image_id, (h, w) in sizes.items():
        Image.fromarray(np.full((h, w, 3), 90, dtype=np.uint8)).save(root / "images" / names[image_id])
    nested = np.zeros((20, 24), dtype=np.uint8)
    nested[5:15, 2:22] = 3
    nested[8:12, 8:14] = 255  # ignore inside the bar
    nested[0:3, 0:3] = 2
    truth = {"many": _two_regions_label(), "empty": np.zeros((12, 16), dtype=np.uint8), "nested": nested}
    for image_id, label in truth.items():
        write_label_png(labels / f"{image_id}.png", label)
    write_folder_dataset_index(root, CLASSES, {names[i]: ["disk"] for i in sizes}, {"some": ["many", "unlabelled"]})
    return root, labels, truth


def _load(tmp_path: Path, coco: dict) -> COCO:
    path = write_coco(tmp_path / "out" / "labels.json", coco)
    return COCO(str(path))


@pytest.mark.parametrize("per", ["region", "class"])
def test_round_trip_gives_back_every_label_pixel(tmp_path, export_case, per):
    root, labels, truth = export_case
    dataset = FolderDataset(root)
    api = _load(tmp_path, labels_to_coco(labels, dataset, per=per))

    assert [(c["id"], c["name"], c["supercategory"]) for c in api.loadCats(api.getCatIds())] == [
        (1, "disk", "wsss"), (2, "square", "wsss"), (3, "bar", "wsss")]
    images = {image["file_name"]: image for image in api.loadImgs(api.getImgIds())}
    assert set(images) == {"many.png", "empty.jpg", "sub/nested.png"}  # the unlabelled image is not exported
    stem = {"many.png": "many", "empty.jpg": "empty", "sub/nested.png": "nested"}
    for file_name, image in images.items():
        label = truth[stem[file_name]]
        assert (image["height"], image["width"]) == label.shape
        rebuilt = np.zeros(label.shape, dtype=np.uint8)
        covered = np.zeros(label.shape, dtype=np.int32)
        for annotation in api.loadAnns(api.getAnnIds(imgIds=[image["id"]])):
            mask = api.annToMask(annotation).astype(bool)
            assert annotation["iscrowd"] == 0 and isinstance(annotation["segmentation"]["counts"], str)
            assert annotation["area"] == mask.sum()
            covered += mask
            rebuilt[mask] = annotation["category_id"]
        assert covered.max() <= 1  # segments never overlap
        for value in range(1, len(CLASSES) + 1):
            assert np.array_equal(rebuilt == value, label == value), (file_name, value)
        assert not covered[(label == 0) | (label == 255)].any()  # background and ignore: in no segment


def test_region_mode_gives_one_annotation_per_8_connected_region(tmp_path, export_case):
    root, labels, _ = export_case
    dataset = FolderDataset(root)

    def counts(per):
        coco = labels_to_coco(labels, dataset, per=per)
        ids = {image["file_name"]: image["id"] for image in coco["images"]}
        found = {}
        for annotation in coco["annotations"]:
            key = (annotation["image_id"], annotation["category_id"])
            found[key] = found.get(key, 0) + 1
        return ids, found, coco

    ids, found, coco = counts("region")
    many, nested = ids["many.png"], ids["sub/nested.png"]
    # disk: block A and the ring; square: beside A and inside the ring; bar: the diagonal pair and a lone pixel
    assert found == {(many, 1): 2, (many, 2): 2, (many, 3): 2, (nested, 2): 1, (nested, 3): 1}
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    _, found, _ = counts("class")
    assert found == {(many, 1): 1, (many, 2): 1, (many, 3): 1, (nested, 2): 1, (nested, 3): 1}


def test_bbox_and_area_of_a_hand_checked_region(export_case):
    root, labels, _ = export_case
    coco = labels_to_coco(labels, FolderDataset(root))
    many = next(image["id"] for image in coco["images"] if image["file_name"] == "many.png")
    disk = sorted((a for a in coco["annotations"] if a["image_id"] == many and a["category_id"] == 1),
                  key=lambda a: a["bbox"][1])
    assert disk[0]["bbox"] == [3.0, 2.0, 6.0, 4.0]
    assert disk[0]["area"] == 24 - 1  # rows 2..5 × cols 3..8, less the ignore pixel
    assert disk[1]["bbox"] == [20.0, 14.0, 8.0, 8.0] and disk[1]["area"] == 64 - 16  # the ring
    bar = sorted((a for a in coco["annotations"] if a["image_id"] == many and a["category_id"] == 3),
                 key=lambda a: a["bbox"][1])
    assert [(b["bbox"], b["area"]) for b in bar] == [([10.0, 10.0, 2.0, 2.0], 2), ([37.0, 27.0, 1.0, 1.0], 1)]


def test_min_area_boxes_only_and_the_counts(export_case):
    root, labels, _ = export_case
    dataset = FolderDataset(root)
    coco = labels_to_coco(labels, dataset, min_area=3, boxes_only=True)
    assert all("segmentation" not in a and a["area"] >= 3 for a in coco["annotations"])
    notes = coco["info"]["wsss"]
    assert notes["segments_below_min_area"] == 2  # the bar's pair and its lone pixel
    assert notes["images_without_label"] == 1 and notes["first_without_label"] == ["unlabelled"]
    assert notes["images_root"] == str(root / "images")
    summary = coco_summary(coco)
    assert "images: 3 exported; 1 image(s) of the data set had no label PNG (unlabelled)" in summary
    assert "2 segment(s) under 3 pixels left out" in summary


def test_ids_export_a_subset_and_skip_the_other_labels(export_case):
    root, labels, _ = export_case
    coco = labels_to_coco(labels, FolderDataset(root), ids=["many", "unlabelled"])
    assert [image["file_name"] for image in coco["images"]] == ["many.png"]
    assert coco["info"]["wsss"]["labels_skipped"] == 2
    with pytest.raises(ValueError, match="nothing to export"):  # no label among the chosen images
        labels_to_coco(labels, FolderDataset(root), ids=["unlabelled"])
    with pytest.raises(ValueError, match="ids not in the data set: nobody"):
        labels_to_coco(labels, FolderDataset(root), ids=["nobody"])


def test_refused_labels_are_errors_naming_the_file(tmp_path, export_case):
    root, labels, _ = export_case
    dataset = FolderDataset(root)
    write_label_png(labels / "stranger.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="stranger.png"):
        labels_to_coco(labels, dataset)
    (labels / "stranger.png").unlink()

    (labels / ".many.tmp123.png").write_bytes(b"")  # an interrupted atomic write: not a label
    (labels / "empty.png").write_bytes(b"")  # an empty PNG
    with pytest.raises(ValueError, match="empty.png"):
        labels_to_coco(labels, dataset)
    write_label_png(labels / "empty.png", np.zeros((5, 5), dtype=np.uint8))  # not the image's 16×12
    with pytest.raises(ValueError, match=r"empty.png: label map is 5×5 but image .* is 16×12"):
        labels_to_coco(labels, dataset)
    write_label_png(labels / "empty.png", np.full((12, 16), 7, dtype=np.uint8))  # 7: no such class
    with pytest.raises(ValueError, match=r"empty.png: values \[7\] are not classes"):
        labels_to_coco(labels, dataset)
    with pytest.raises(ValueError, match="per='instance'"):
        labels_to_coco(labels, dataset, per="instance")


def test_cli_writes_the_json_and_prints_the_counts(tmp_path, export_case, capsys):
    root, labels, _ = export_case
    out = tmp_path / "export" / "labels.json"
    assert main(["export", str(labels), "--dataset", str(root), "--out", str(out), "--per", "class"]) == 0
    printed = capsys.readouterr().out
    assert "images: 3 exported" in printed and "annotations: 5 (one per class and image)" in printed
    assert f"data_path: {root / 'images'}" in printed
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 3 and len(coco["annotations"]) == 5
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # written atomically: no leftovers

    assert main(["export", str(labels), "--dataset", str(root), "--split", "some", "--out", str(out)]) == 0
    assert "images: 1 exported; 1 image(s) of the data set had no label PNG (unlabelled); 2 label PNG(s) of other " \
           "images skipped" in capsys.readouterr().out

    write_label_png(labels / "stranger.png", np.zeros((8, 8), dtype=np.uint8))
    assert main(["export", str(labels), "--dataset", str(root), "--out", str(tmp_path / "other.json")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "stranger.png" in error
    assert not (tmp_path / "other.json").exists()
