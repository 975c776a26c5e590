"""Issue 29, item 2: an output whose input changed since it was written is made again.

Each finished output's manifest entry records its input (image bytes, tags, class list); a re-run
redoes what no longer matches and says how many and why, and never redoes what only looks changed
(a file touched or copied with the same bytes)."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data import FolderDataset
from wsss.data.dataset_walk import Walk, WalkFiles, run_dataset
from wsss.data.folder import write_folder_dataset_index
from wsss.data.input_records import stale_outputs
from wsss.data.label_png import read_label_png, write_label_png
from wsss.data.manifest import MANIFEST, read_manifest
from wsss.data.synth import SYNTH_CLASSES as CLASSES
from tests.conftest import draw_sample
from tests.runs import classifier_of
from tests.test_classifier import tiny_config


def tags_of(root) -> dict[str, list[str]]:
    """{image file name: tags} of a folder data set's tags.csv."""
    rows = (root / "tags.csv").read_text().splitlines()[1:]
    return {name: tags.split(";") for name, tags in (row.split(",", 1) for row in rows)}


def retag(root, name: str, tags: list[str]) -> None:
    write_folder_dataset_index(root, (root / "classes.txt").read_text().split(), {**tags_of(root), name: tags})


def label_walk(dataset, out, value: int = 1) -> dict:
    """A walk that writes for each image a label of its first tag's class (no model)."""
    def compute(batch):
        return [int(np.flatnonzero(sample.tags)[0]) + value for sample in batch]

    def write(sample, label):
        write_label_png(out / f"{sample.id}.png", np.full(sample.image.shape[:2], label, np.uint8))

    return run_dataset(dataset, compute, write, Walk(progress=False), WalkFiles(out))


def test_changed_tags_image_bytes_and_class_list_are_redone_and_a_touch_is_not(folder_dataset, tmp_path, capsys):
    out = tmp_path / "labels"
    assert label_walk(FolderDataset(folder_dataset), out)["ok"] == 6
    entry = read_manifest(out / MANIFEST)["img0"]
    assert entry["input"]["tags"] == ["disk"] and len(entry["input"]["sha256"]) == 64
    assert label_walk(FolderDataset(folder_dataset), out) == {"ok": 0, "skipped": 6, "failed": 0}

    # touched, and copied over by the same bytes: not redone
    image = folder_dataset / "images" / "img1.png"
    os.utime(image, ns=(1, 1))
    shutil.copy(image, tmp_path / "copy.png")
    shutil.copy(tmp_path / "copy.png", image)
    assert stale_outputs(FolderDataset(folder_dataset), ["img1"], out) == {}
    assert label_walk(FolderDataset(folder_dataset), out)["ok"] == 0

    # re-tagged: redone, with the reason in the manifest and on the terminal
    retag(folder_dataset, "img0.png", ["bar"])
    capsys.readouterr()
    counts = label_walk(FolderDataset(folder_dataset), out)
    assert counts == {"ok": 1, "skipped": 5, "failed": 0, "redone": 1}
    assert read_label_png(out / "img0.png").max() == 3  # bar
    assert read_manifest(out / MANIFEST)["img0"]["redone"] == "tags changed (disk → bar)"
    assert "1 finished output(s) redone because their input changed since: 1 tags changed (img0)" in capsys.readouterr().out

    # the image replaced by another picture: redone
    rng = np.random.default_rng(7)
    Image.fromarray(draw_sample(rng, (40, 48), [2])[0]).save(folder_dataset / "images" / "img2.png")
    assert stale_outputs(FolderDataset(folder_dataset), ["img2"], out) == {"img2": "image file changed"}
    assert label_walk(FolderDataset(folder_dataset), out)["redone"] == 1

    # the class list reordered: every label's values mean other classes now
    classes = (folder_dataset / "classes.txt").read_text().split()
    write_folder_dataset_index(folder_dataset, classes[::-1], tags_of(folder_dataset))
    dataset = FolderDataset(folder_dataset)
    assert set(stale_outputs(dataset, dataset.ids, out).values()) == {"class list changed"}
    assert label_walk(dataset, out)["redone"] == 6
    assert read_label_png(out / "img0.png").max() == 1 + classes[::-1].index("bar")


def test_a_stale_output_whose_redo_fails_is_not_left_behind(folder_dataset, tmp_path):
    out = tmp_path / "labels"
    label_walk(FolderDataset(folder_dataset), out)
    (folder_dataset / "images" / "img3.png").write_bytes(b"not an image any more")
    counts = label_walk(FolderDataset(folder_dataset), out)
    assert counts["failed"] == 1 and counts["redone"] == 1
    assert not (out / "img3.png").exists()  # the label of the old picture is gone
    assert read_manifest(out / MANIFEST)["img3"]["status"] == "failed"


def test_a_manifest_of_an_older_wsss_without_input_records_is_trusted(folder_dataset, tmp_path):
    out = tmp_path / "labels"
    label_walk(FolderDataset(folder_dataset), out)
    lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    (out / MANIFEST).write_text("".join(json.dumps({k: v for k, v in e.items() if k != "input"}) + "\n" for e in lines))
    retag(folder_dataset, "img0.png", ["bar"])
    assert label_walk(FolderDataset(folder_dataset), out) == {"ok": 0, "skipped": 6, "failed": 0}


def test_read_manifest_reads_appended_lines_and_notices_a_rewritten_file(tmp_path):
    path = tmp_path / MANIFEST
    path.write_text('{"id": "a", "status": "ok"}\n{"id": "b", "sta')  # b: a line being written
    assert read_manifest(path) == {"a": {"id": "a", "status": "ok"}}
    with path.open("a") as handle:
        handle.write('tus": "failed"}\n')
    assert read_manifest(path)["b"] == {"id": "b", "status": "failed"}
    path.write_text('{"id": "c", "status": "ok"}\n{"id": "a", "status": "failed"}\n')  # rewritten in place
    assert read_manifest(path) == {"c": {"id": "c", "status": "ok"}, "a": {"id": "a", "status": "failed"}}
    path.write_text('{"id": "d", "status": "ok"}\n')  # shorter
    assert read_manifest(path) == {"d": {"id": "d", "status": "ok"}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny classifier of the demo's classes (one epoch)."""
    return classifier_of(tiny_config(tmp_path_factory.mktemp("classifier"), "train.classifier.epochs=1"),
                         progress=False)


def test_pseudo_label_relabels_an_image_whose_tags_changed(tmp_path, checkpoint, capsys):
    root, out = tmp_path / "data", tmp_path / "labels"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    tags = {}
    for i in range(4):
        Image.fromarray(draw_sample(rng, (40, 48), [1 + i])[0]).save(root / "images" / f"im{i}.png")
        tags[f"im{i}.png"] = [CLASSES[i]]
    write_folder_dataset_index(root, CLASSES, tags)
    args = ["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(out),
            "--set", "refine.saliency.source=none"]
    assert main(args) == 0
    before = {f"im{i}": set(np.unique(read_label_png(out / f"im{i}.png"))) for i in range(4)}
    assert before["im0"] <= {0, 1, 255} and 1 in before["im0"]
    retag(root, "im0.png", [CLASSES[4]])  # disk → ring
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 written (1 redone: their input changed), 3 already there" in printed, printed[-600:]
    after = set(np.unique(read_label_png(out / "im0.png")))
    assert 1 not in after and 5 in after  # the old class is gone, the new one is there
    assert {f"im{i}": set(np.unique(read_label_png(out / f"im{i}.png"))) for i in range(1, 4)} == \
        {k: v for k, v in before.items() if k != "im0"}
    assert read_manifest(out / MANIFEST)["im0"]["redone"] == "tags changed (disk → ring)"
