"""Inputs of issue 29 that used to end a run, hang it, or pass without a word: a manifest cut
mid-line, a 251-character file stem, a FIFO listed as an image, a training split smaller than the
batch, NaN in a JSON file, more classes than a label PNG holds, an id listed twice in a split or
in both the training and the validation split."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data import FolderDataset, VocDataset
from wsss.data.dataset_walk import MANIFEST, Manifest, Walk, WalkFiles, run_dataset
from wsss.data.folder import write_folder_dataset_index
from wsss.data.images import ImageReadError, read_rgb, stored_image_size
from wsss.data.label_png import read_label_png, write_label_png
from wsss.data.synth import SYNTH_CLASSES as CLASSES
from wsss.files import atomic_path, write_json
from wsss.data.manifest import read_manifest
from tests.conftest import draw_sample
from tests.runs import classifier_of
from tests.test_classifier import tiny_config

LONG_STEM = "l" * 251  # + ".png": a 255-byte name, the most ext4 allows


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (JavaScript's, Go's) do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def manifest_entries(out) -> dict[str, dict]:
    return {entry["id"]: entry for entry in map(json.loads, (out / MANIFEST).read_text().splitlines())}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny classifier of the demo's classes (one epoch)."""
    return classifier_of(tiny_config(tmp_path_factory.mktemp("classifier"), "train.classifier.epochs=1"),
                         progress=False)


def odd_folder(root, odd: dict[str, callable]) -> dict[str, list[str]]:
    """A folder data set of 3 good 40×48 images plus ``odd``: {file name: make(path)}; returns its tags."""
    rng = np.random.default_rng(5)
    (root / "images").mkdir(parents=True)
    tags = {}
    for i in range(3):
        image, _ = draw_sample(rng, (40, 48), [1 + i])
        Image.fromarray(image).save(root / "images" / f"good{i}.png")
        tags[f"good{i}.png"] = [CLASSES[i]]
    for name, make in odd.items():
        make(root / "images" / name)
        tags[name] = [CLASSES[0]]
    write_folder_dataset_index(root, CLASSES, tags)
    return tags


def good_image(path):
    Image.fromarray(draw_sample(np.random.default_rng(9), (40, 48), [1])[0]).save(path)


# item 13: a torn last manifest line

def test_a_torn_last_manifest_line_is_ended_before_the_next_record(tmp_path):
    path = tmp_path / MANIFEST
    path.write_text('{"id": "a", "status": "ok", "reason": ""}\n{"id": "b", "status": "o')  # a hard stop mid-write
    with Manifest(path) as manifest:
        manifest.record("c", "ok")
        assert manifest.recorded_ids() == {"a", "c"}
    lines = path.read_text().splitlines()
    assert lines[1] == '{"id": "b", "status": "o' and json.loads(lines[2])["id"] == "c"
    with Manifest(path) as manifest:  # a whole last line: nothing added
        manifest.record("d", "ok")
    assert len(path.read_text().splitlines()) == 4


def test_a_walk_after_a_torn_manifest_records_every_image(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    odd_folder(root, {})
    out.mkdir()
    (out / MANIFEST).write_text('{"id": "old", "status": "ok", "reason": ""}\n{"id": "go')
    counts = run_dataset(FolderDataset(root), lambda batch: [None] * len(batch),
                         lambda sample, _: (out / f"{sample.id}.png").write_bytes(b"done") and None, Walk(), WalkFiles(out))
    assert counts["ok"] == 3
    assert {"good0", "good1", "good2"} <= set(read_manifest(out / MANIFEST))




# item 6: a 251-character file stem

def test_the_temporary_name_of_a_long_file_name_stays_within_name_max(tmp_path):
    for name in (LONG_STEM + ".png", "é" * 125 + ".png"):  # 255 and 254 bytes
        path = tmp_path / name
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".png"
            assert len(os.fsencode(tmp.name)) <= 255
            tmp.write_bytes(b"x")
        assert path.read_bytes() == b"x"
    write_label_png(tmp_path / f"{LONG_STEM}.png", np.ones((4, 5), np.uint8))
    assert read_label_png(tmp_path / f"{LONG_STEM}.png").shape == (4, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LONG_STEM + ".png", "é" * 125 + ".png"])


def test_pseudo_label_writes_an_image_with_a_251_character_stem(tmp_path, checkpoint):
    root, out = tmp_path / "data", tmp_path / "labels"
    odd_folder(root, {f"{LONG_STEM}.png": good_image})
    args = ["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(out),
            "--set", "refine.saliency.source=none"]
    assert main(args) == 0
    assert read_label_png(out / f"{LONG_STEM}.png").shape == (40, 48)
    assert manifest_entries(out)[LONG_STEM]["status"] == "ok"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.suffix == ".png"]
    assert main(args) == 0  # a re-run finds it finished
    # cam's overlays are <id>_<class>.png: too long a name for this id; the image fails alone, the others are written
    cam = tmp_path / "cam"
    assert main(["cam", "--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(cam)]) == 1
    entries = manifest_entries(cam)
    assert entries[LONG_STEM]["status"] == "failed" and "file name too long" in entries[LONG_STEM]["reason"]
    assert all(entries[f"good{i}"]["status"] == "ok" for i in range(3))
    assert not (cam / "maps" / f"{LONG_STEM}.npz").exists()  # not marked finished: a re-run tries it again


# item 5: a FIFO listed as an image

@pytest.mark.timeout(120)  # before the fix: blocked for ever in open()
def test_a_fifo_listed_as_an_image_fails_alone(tmp_path, checkpoint, capsys):
    root, out = tmp_path / "data", tmp_path / "labels"
    odd_folder(root, {"pipe.png": os.mkfifo})
    fifo = root / "images" / "pipe.png"
    with pytest.raises(ImageReadError, match=re.escape(f"{fifo}: not a regular file (a FIFO")):
        read_rgb(fifo)
    assert stored_image_size(fifo) is None
    code = main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(out),
                 "--set", "refine.saliency.source=none"])
    assert code == 1
    entries = manifest_entries(out)
    assert entries["pipe"]["status"] == "failed" and "not a regular file" in entries["pipe"]["reason"]
    assert all(entries[f"good{i}"]["status"] == "ok" and (out / f"good{i}.png").is_file() for i in range(3))
    capsys.readouterr()
    assert main(["data", "check", str(root), "--quiet"]) == 1  # listed as an unreadable image
    assert "pipe.png: not a regular file" in capsys.readouterr().out


# item 4: a training split smaller than the batch; NaN in JSON

def test_a_training_split_smaller_than_the_batch_is_trained_as_one_batch(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.classifier.batch_size=64")  # 24 images, some of them for val
    path = classifier_of(config, progress=False)
    train = len(FolderDataset(config.data.root, split="train"))
    assert f"{train} training images, fewer than train.classifier.batch_size=64: each step trains on all {train}" \
        in capsys.readouterr().out
    history = strict_json((path.parent / "history.json").read_text())  # strict JSON: no NaN
    # trained: before, no batch was full, the loss was 0 and nothing was seen
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert all(entry["loss"] > 0 and entry["images_per_s"] > 0 for entry in history)


def test_json_files_hold_no_nan(tmp_path):
    path = write_json(tmp_path / "h.json", {"loss": float("nan"), "AP": [0.5, float("inf"), np.float32("nan")],
                                            "ok": 1.5, "nested": {"x": -float("inf")}})
    assert strict_json(path.read_text()) == {"loss": None, "AP": [0.5, None, None], "ok": 1.5, "nested": {"x": None}}


# item 3: more classes than an 8-bit label PNG holds

def test_more_than_254_classes_are_refused(tmp_path, capsys):
    root = tmp_path / "many"
    (root / "images").mkdir(parents=True)
    good_image(root / "images" / "a.png")
    classes = [f"c{i}" for i in range(255)]
    write_folder_dataset_index(root, classes, {"a.png": ["c254"]})
    with pytest.raises(ValueError, match=re.escape(f"{root / 'classes.txt'}: 255 classes; a label PNG holds at most 254")):
        FolderDataset(root)
    assert main(["data", "check", str(root), "--quiet"]) == 2
    assert "255 classes; a label PNG holds at most 254" in capsys.readouterr().err
    write_folder_dataset_index(root, classes[:254], {"a.png": ["c253"]})
    assert len(FolderDataset(root).classes) == 254  # the most there is room for


# item 9: an id twice in a split; an id in both the training and the validation split

def test_an_id_listed_twice_in_a_split_is_kept_once_with_a_warning(folder_dataset, voc_dataset, capsys):
    split = folder_dataset / "splits" / "train.txt"
    split.write_text("img0\nimg1\nimg0\nimg2\nimg3\nimg1\n")
    dataset = FolderDataset(folder_dataset, split="train")
    assert dataset.ids == ["img0", "img1", "img2", "img3"]
    err = capsys.readouterr().err
    assert f"warning: {split}: 2 id(s) listed more than once, each kept once: img0, img1" in err
    voc_split = voc_dataset / "ImageSets" / "Segmentation" / "val.txt"
    voc_split.write_text(voc_split.read_text() + "2007_000015\n")
    assert VocDataset(voc_dataset, split="val").ids.count("2007_000015") == 1
    assert f"{voc_split}: 1 id(s) listed more than once, each kept once: 2007_000015" in capsys.readouterr().err
    warning = f"WARNING {split}: 2 id(s) listed more than once, each kept once: img0, img1"
    for only in ([], ["--split", "train"]):  # the splits are checked whichever split data check reads
        assert main(["data", "check", str(folder_dataset), "--quiet", *only]) == 0
        assert capsys.readouterr().out.count(warning) == 1
    assert main(["data", "check", str(folder_dataset), "--quiet", "--split", "train", "--strict"]) == 1


def test_data_check_warns_of_an_id_in_both_training_and_validation_split(folder_dataset, voc_dataset, capsys):
    assert main(["data", "check", str(folder_dataset), "--quiet"]) == 0
    assert "both" not in capsys.readouterr().out
    (folder_dataset / "splits" / "val.txt").write_text("img4\nimg5\nimg1\n")
    assert main(["data", "check", str(folder_dataset), "--quiet"]) == 0  # a warning
    out = capsys.readouterr().out
    assert re.search(r"WARNING .*val\.txt: 1 id\(s\) in both the training split 'train' and the validation split "
                     r"'val' \(img1\)", out), out
    assert main(["data", "check", str(folder_dataset), "--quiet", "--strict"]) == 1
    val = voc_dataset / "ImageSets" / "Segmentation" / "val.txt"
    val.write_text(val.read_text() + "2007_000000\n")
    main(["data", "check", str(voc_dataset), "--quiet"])
    assert "in both the training split 'train' and the validation split 'val' (2007_000000)" in capsys.readouterr().out
