"""Corrections come back (issue 33, item 3): `wsss export --review N` writes the N least
confident labels as COCO pre-annotations; a person edits one mask; the edited JSON, given as
``train.segmenter.corrections``, replaces those images' labels in the segmenter's training
crops, the pseudo-label files untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data.base import DatasetError
from wsss.data.corrections import read_corrections, training_labels
from wsss.data.folder import FolderDataset, write_folder_dataset_index
from wsss.data.label_png import read_label_png, write_label_png
from wsss.data.manifest import MANIFEST, Manifest
from wsss.train.segmenter_data import SegmenterCrops

CLASSES = ["disk", "square", "bar"]
SIDE = 24
SCORES = {"a": 0.9, "b": 0.2, "c": 0.7, "d": 0.1, "e": 0.5, "f": 0.95}  # the queue of 3: d, b, e


@pytest.fixture
def labelled(tmp_path: Path):
    """A folder data set of six 24×24 images, a pseudo-label of each (a disk block, some ignore
    pixels) and the manifest a labelling walk writes, with a confidence score per image."""
    root, labels = tmp_path / "data", tmp_path / "pseudo_labels"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    truth = {}
    with Manifest(labels / MANIFEST) as manifest:
        for k, image_id in enumerate(SCORES):
            Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(root / "images" / f"{image_id}.png")
            label = np.zeros((SIDE, SIDE), np.uint8)
            label[2 + k: 12 + k, 3:15] = 1
            label[0, :4] = 255
            write_label_png(labels / f"{image_id}.png", label)
            truth[image_id] = label
            manifest.record(image_id, "ok", confidence={"score": SCORES[image_id]})
    write_folder_dataset_index(root, CLASSES, {f"{i}.png": ["disk"] for i in SCORES})
    return FolderDataset(root), labels, truth


def test_review_export_edit_and_back_into_the_training_crops(labelled, tmp_path):
    dataset, labels, pseudo = labelled
    before = {p.name: p.read_bytes() for p in labels.glob("*.png")}
    queue = tmp_path / "queue.json"
    assert main(["export", str(labels), "--dataset", str(dataset.root), "--out", str(queue), "--review", "3"]) == 0
    coco = json.loads(queue.read_text())
    assert [Path(image["file_name"]).stem for image in coco["images"]] == ["b", "d", "e"]  # the data set's order

    # a person redraws image d: a square where the pseudo-label had a disk
    d = next(image["id"] for image in coco["images"] if image["file_name"] == "d.png")
    square = next(c["id"] for c in coco["categories"] if c["name"] == "square")
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != d] + [{
        "id": 999, "image_id": d, "category_id": square, "iscrowd": 0, "area": 80.0, "bbox": [4, 6, 10, 8],
        "segmentation": [[4, 6, 14, 6, 14, 14, 4, 14]]}]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(coco))

    work = tmp_path / "run" / "corrections"
    source = training_labels(labels, dataset, edited, work)
    assert sorted(source.corrected) == ["b", "d", "e"]
    fixed = read_label_png(source.path("d"))
    assert set(np.unique(fixed).tolist()) == {0, 2} and (fixed == 2).sum() >= 80  # the square, nothing else
    for image_id in ("b", "e"):  # reviewed as they were: the pseudo-label, ignore pixels now background
        assert np.array_equal(read_label_png(source.path(image_id)), np.where(pseudo[image_id] == 255, 0,
                                                                              pseudo[image_id]))
    for image_id in ("a", "c", "f"):
        assert source.path(image_id) == labels / f"{image_id}.png"
    assert {p.name: p.read_bytes() for p in labels.glob("*.png")} == before  # never written

    # the segmenter's training crops (whole images: scale 1, crop = side) see exactly those labels
    crops = SegmenterCrops(dataset, SIDE, (1.0, 1.0), seed=0, labels=source)
    for index, image_id in enumerate(dataset.ids):
        got = crops[(index, index)]["label"].numpy()
        want = read_label_png(source.path(image_id)).astype(np.int64)
        assert np.array_equal(got, want) or np.array_equal(got, want[:, ::-1]), image_id


def test_a_folder_of_corrected_pngs_and_what_is_refused(labelled, tmp_path):
    dataset, labels, pseudo = labelled
    folder = tmp_path / "fixed"
    write_label_png(folder / "c.png", np.full((SIDE, SIDE), 3, np.uint8))
    assert read_corrections(folder, dataset) == {"c": folder / "c.png"}

    write_label_png(folder / "zebra.png", np.zeros((SIDE, SIDE), np.uint8))
    with pytest.raises(DatasetError, match="zebra.png: a correction of 'zebra', which is not an image"):
        read_corrections(folder, dataset)
    (folder / "zebra.png").unlink()
    write_label_png(folder / "a.png", np.zeros((SIDE, SIDE + 1), np.uint8))
    with pytest.raises(DatasetError, match=r"a.png: the label is 25×24, the image .* is 24×24"):
        read_corrections(folder, dataset)
    write_label_png(folder / "a.png", np.full((SIDE, SIDE), 7, np.uint8))
    with pytest.raises(DatasetError, match=r"values \[7\] are not classes \(0..3\) or 255"):
        read_corrections(folder, dataset)
    with pytest.raises(DatasetError, match="expected a COCO instances JSON"):
        read_corrections(tmp_path / "nothing.json", dataset)

    queue = tmp_path / "queue.json"
    assert main(["export", str(labels), "--dataset", str(dataset.root), "--out", str(queue), "--review", "2"]) == 0
    renamed = json.loads(queue.read_text())
    renamed["categories"][0]["name"] = "zebra"
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    with pytest.raises(DatasetError, match=r"categories \['zebra'\] are not classes of the data set"):
        read_corrections(tmp_path / "renamed.json", dataset, tmp_path / "work")


def test_review_export_needs_recorded_confidences(labelled, tmp_path, capsys):
    dataset, labels, _ = labelled
    (labels / MANIFEST).unlink()
    assert main(["export", str(labels), "--dataset", str(dataset.root), "--out", str(tmp_path / "q.json"),
                 "--review", "2"]) == 2
    assert "records no confidence for any image" in capsys.readouterr().err


def test_two_stage_training_records_the_corrected_images(tmp_path, capsys):
    """A two-stage run with a folder of corrections: the run's manifest names each corrected
    training image, corrections.json counts them (and the one outside the training split)."""
    from tests.runs import segmenter_of
    from tests.test_segmenter import segmenter_config
    from wsss.data import open_dataset
    from wsss.data.manifest import read_manifest

    plain = segmenter_config(tmp_path)
    train, val = (open_dataset(plain.data, split) for split in ("train", "val"))  # generates the data
    fixed = tmp_path / "fixed"
    for image_id in [train.ids[0], train.ids[3], val.ids[0]]:
        write_label_png(fixed / f"{image_id}.png", np.zeros((48, 48), np.uint8))
    config = segmenter_config(tmp_path, "train.segmenter.mode=two_stage", "train.segmenter.steps=2",
                              f"train.segmenter.labels_dir={tmp_path / 'data' / 'masks'}",
                              f"train.segmenter.corrections={fixed}")
    segmenter_of(config, score=False, progress=False)
    folder = tmp_path / "run" / "segmenter_two_stage"
    entries = read_manifest(folder / "manifest.jsonl")
    assert sorted(i for i, e in entries.items() if e["status"] == "corrected") == sorted([train.ids[0], train.ids[3]])
    record = json.loads((folder / "corrections.json").read_text())
    assert record["images"] == 2 and record["outside_training_split"] == 1 and record["source"] == str(fixed)
    assert "2 of 19 training images learn from corrected labels" in capsys.readouterr().out
