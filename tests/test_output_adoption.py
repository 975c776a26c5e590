"""Files already in an output folder are never adopted as finished results unless the folder's
own record (source.json) says a wsss run of the same settings wrote them (issue 29, item 1)."""

from __future__ import annotations

import shutil

import pytest

from tests.runs import classifier_of
from tests.test_classifier import tiny_config
from wsss.cli import main
from wsss.steps.provenance import SOURCE, claim_output_dir


def test_a_folder_with_files_but_no_record_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img0.png").write_bytes(b"not ours")
    with pytest.raises(ValueError, match=r"holds 1 file\(s\) or folder\(s\) \(img0.png\) but no source.json"):
        claim_output_dir(out, {"checkpoint_sha256": "abc"})
    assert not (out / SOURCE).exists()
    note = claim_output_dir(out, {"checkpoint_sha256": "abc"}, strict=False)  # the inbox: kept, with a note
    assert "but no source.json" in note and (out / SOURCE).is_file()
    assert claim_output_dir(tmp_path / "new", {"checkpoint_sha256": "abc"}) is None  # new: claimed


def test_commands_refuse_the_masks_or_images_folder_as_output(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.classifier.epochs=1")
    checkpoint = classifier_of(config, progress=False)
    data = config.data.root
    masks = data / "masks"
    before = sorted(p.name for p in masks.iterdir())
    code = main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
                 "--out", str(masks)])
    assert code == 2
    error = capsys.readouterr().err
    assert f"error: {masks} holds {len(before)} file(s)" in error and "would be taken for finished outputs" in error
    assert sorted(p.name for p in masks.iterdir()) == before  # nothing written, no source.json
    images = tmp_path / "photos"
    shutil.copytree(data / "images", images)
    code = main(["cam", "--checkpoint", str(checkpoint), "--dataset", str(data), "--out", str(images)])
    assert code == 2 and "but no source.json" in capsys.readouterr().err
    assert not (images / SOURCE).exists() and not (images / "maps").exists()


def test_export_refuses_labels_made_with_another_class_list(folder_dataset, tmp_path, capsys):
    """Reordering classes.txt after labelling would swap the exported categories (issue 29, item 7)."""
    import json

    import numpy as np

    from wsss.data.folder import CLASSES_FILE
    from wsss.data.label_png import write_label_png

    labels = tmp_path / "labels"
    for i in range(6):
        write_label_png(labels / f"img{i}.png", np.full((40, 48), 1 + i % 3, np.uint8))
    (labels / SOURCE).write_text(json.dumps({"checkpoint_sha256": "abc", "classes": ["disk", "square", "bar"]}))
    out = tmp_path / "coco.json"
    assert main(["export", str(labels), "--dataset", str(folder_dataset), "--out", str(out)]) == 0
    assert [c["name"] for c in json.loads(out.read_text())["categories"]] == ["disk", "square", "bar"]
    (folder_dataset / CLASSES_FILE).write_text("square\ndisk\nbar\n")
    capsys.readouterr()
    assert main(["export", str(labels), "--dataset", str(folder_dataset), "--out", str(tmp_path / "b.json")]) == 2
    error = capsys.readouterr().err
    assert "made with the classes ['disk', 'square', 'bar']" in error and "['square', 'disk', 'bar']" in error
    assert not (tmp_path / "b.json").exists()
    (labels / SOURCE).unlink()  # no record: exported with today's list, and said so
    assert main(["export", str(labels), "--dataset", str(folder_dataset), "--out", str(tmp_path / "c.json")]) == 0
    assert "records no class names" in capsys.readouterr().out


def test_an_older_record_without_class_names_is_no_difference(tmp_path):
    source = {"checkpoint_sha256": "abc", "cam": {"method": "getam"}}
    claim_output_dir(tmp_path, source)
    assert claim_output_dir(tmp_path, {**source, "classes": ["a", "b"]}) is None  # made before classes were kept
    (tmp_path / SOURCE).write_text(__import__("json").dumps({**source, "classes": ["b", "a"]}))
    with pytest.raises(ValueError, match="classes"):
        claim_output_dir(tmp_path, {**source, "classes": ["a", "b"]})
