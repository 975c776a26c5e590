"""Classes whose pseudo-labels spread over the background are named without masks: the rule on
label files written by hand, and a real run on a data set made to fail that way (one class always
on the same surroundings, ``data.synth.context``)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.data.folder import FolderDataset, write_folder_dataset_index
from wsss.data.label_png import write_label_png
from wsss.eval.label_spread import class_shares, spreading_classes
from wsss.report.build import RunResults, build_report
from wsss.report.html import render_html

CLASSES = ["boat", "bird", "kite"]


def labelled_folder(tmp_path, share_of: dict[str, float], images: int = 8):
    """A folder data set whose images each hold one class, and a label folder where that class
    covers ``share_of[class]`` of the image (a square from the top-left corner)."""
    root, labels = tmp_path / "data", tmp_path / "labels"
    (root / "images").mkdir(parents=True)
    tags = {}
    for c, name in enumerate(CLASSES):
        for i in range(images):
            image_id = f"{name}{i}"
            (root / "images" / f"{image_id}.png").write_bytes(b"")  # never read: the rule reads labels and tags
            tags[f"{image_id}.png"] = [name]
            label = np.zeros((50, 50), dtype=np.uint8)
            side = int(round(50 * np.sqrt(share_of[name])))
            label[:side, :side] = c + 1
            write_label_png(labels / f"{image_id}.png", label)
    write_folder_dataset_index(root, CLASSES, tags)
    return FolderDataset(root), labels


def test_the_rule_names_the_class_that_covers_every_image(tmp_path):
    dataset, labels = labelled_folder(tmp_path, {"boat": 0.85, "bird": 0.1, "kite": 0.12})
    shares = class_shares(labels, dataset, dataset.ids)
    assert shares["boat"]["images"] == 8 and shares["boat"]["full_images"] == 1.0
    assert abs(shares["bird"]["mean_share"] - 0.1) < 0.01
    found = spreading_classes(shares)
    assert [item["class"] for item in found] == ["boat"]
    assert "in 100% of the 8 images" in found[0]["why"] and "the median class's" in found[0]["why"]
    assert "refine.label.alpha" in found[0]["try"]


def test_large_but_ordinary_classes_are_not_named(tmp_path):
    """Large objects everywhere (each class 35-55 %), or one class twice the others: not spread."""
    dataset, labels = labelled_folder(tmp_path, {"boat": 0.55, "bird": 0.35, "kite": 0.45})
    assert spreading_classes(class_shares(labels, dataset, dataset.ids)) == []
    dataset, labels = labelled_folder(tmp_path / "b", {"boat": 0.3, "bird": 0.15, "kite": 0.15})
    assert spreading_classes(class_shares(labels, dataset, dataset.ids)) == []
    # too few images tagged with a class: not judged
    dataset, labels = labelled_folder(tmp_path / "c", {"boat": 0.9, "bird": 0.1, "kite": 0.1}, images=3)
    assert spreading_classes(class_shares(labels, dataset, dataset.ids)) == []


@pytest.mark.slow
def test_a_class_always_on_water_is_named_in_the_log_report_json_and_page(tmp_path, capsys):
    """The demo's generator with 'disk' always on one wave pattern (64 px, 200 images): the
    classifier tells disks by the water, their labels cover it, and the pseudo-label step names
    'disk', and only it, with what to try; the report carries it to report.json and the page."""
    from tests.runs import classifier_of
    from wsss.config import load_config
    from wsss.steps.recipe import DEMO_CONFIG
    from wsss.steps.labels_step import pseudo_label

    config = load_config(DEMO_CONFIG, [
        f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'water'}", "data.synth.num_images=200",
        "data.synth.image_size=64", "data.synth.context=disk", "model.img_size=64", "cam.scales=[2.0]",
        "train.classifier.epochs=12"])
    checkpoint = classifier_of(config)
    summary = pseudo_label(config, checkpoint, config.data.train_split, tmp_path / "labels", progress=False)
    log = capsys.readouterr().out
    assert [item["class"] for item in summary["spreading"]] == ["disk"], summary["class_shares"]
    assert "warning: the labels of class 'disk' spread over the background" in log
    assert summary["class_shares"]["disk"]["mean_share"] > 0.6
    assert summary["mIoU"] < 0.75  # the masks confirm it: the disk labels cover the water
    content, page = build_report("water", [], results=RunResults(pseudo=summary))
    assert content["pseudo_labels"]["spreading"][0]["class"] == "disk"
    html = render_html(page)
    assert "class &#x27;disk&#x27; spread over the background" in html and "Pseudo-labels per class" in html
