"""Confidence per labelled image and the review queue (the least confident labels first)."""

import json

import numpy as np
import pytest
import torch

from wsss.data import FolderDataset
from wsss.data.folder import write_folder_dataset_index
from wsss.data.label_png import IGNORE_INDEX, write_label_png
from wsss.eval.review import read_confidences, review_queue
from wsss.refine.confidence import doubt_mask, label_confidence
from PIL import Image


def test_label_confidence_by_hand():
    tags = np.array([1, 0, 1])
    probs = torch.tensor([0.9, 0.1, 0.6])
    refined = torch.zeros(3, 2, 4)
    refined[0] = 0.8
    refined[2] = 0.4
    rule = torch.tensor([[1, 1, 0, 0], [3, 3, 255, 0]])
    labels = torch.tensor([[1, 1, 0, 0], [3, 0, 255, 0]])  # the CRF moved one pixel of class 3
    c = label_confidence(tags, probs, refined, rule, labels)
    assert c["tag_prob"] == 0.6  # the least believed tag
    assert c["map_support"] == round((0.8 + 0.8 + 0.4) / 3, 4)
    assert c["ignore_share"] == 0.125 and c["crf_changed"] == 0.125
    # 3 of 8 pixels hold a class: the CRF's and the ignore's shares relative to them are a third
    assert c["crf_changed_rel"] == c["ignore_rel"] == round(0.125 / 0.375, 4) and c["tags"] == 2
    # class 1's map (0.8 on all 8 pixels) lies on 2 labelled pixels: 6/8 outside; class 3's: 7/8
    assert c["map_outside"] == 0.875
    z = (-0.2168 * np.log(1 / 3 + 1e-3) - 0.0623 * np.log(1 / 3 + 1e-3) + 0.4656 * (2.0 / 3)
         - 0.3787 * np.log(0.875 + 1e-3) + 0.1520 * 0.6 - 0.0827 * 2 + 0.2346)
    assert c["score"] == pytest.approx(1.02 - np.exp(-z), abs=1e-4)  # the expected mIoU
    cleaner = label_confidence(tags, probs, refined, labels, labels)  # no pixel changed by the CRF
    assert cleaner["crf_changed_rel"] == 0 and cleaner["score"] > c["score"]
    none = label_confidence(tags, None, refined, rule, torch.zeros(2, 4, dtype=torch.long))
    assert none["tag_prob"] is None and none["map_support"] == 0.0 and 0 <= none["score"] < c["score"]
    fitting = torch.zeros(3, 2, 4)
    fitting[0][labels == 1], fitting[2][labels == 3] = 0.8, 0.4  # each map only on its labelled pixels
    tight = label_confidence(tags, probs, fitting, rule, labels)
    assert tight["map_outside"] == 0 and tight["score"] > c["score"]
    # maps that fit the label: only the relabelled and the ignored pixels are doubted
    assert np.array_equal(doubt_mask(rule, labels, fitting, tags), [[0, 0, 0, 0], [0, 1, 1, 0]])
    # class 1's map (0.8) on every pixel is doubted where the label is not class 1; class 3's
    # (0.4) is under DOUBT_MAP
    assert np.array_equal(doubt_mask(rule, labels, refined, tags), [[0, 0, 1, 1], [1, 1, 1, 1]])


def test_read_confidences_keeps_the_latest_outcome(tmp_path):
    lines = [{"id": "a", "status": "ok", "reason": "", "confidence": {"score": 0.2}},
             {"id": "b", "status": "ok", "reason": ""},  # written before confidences existed
             {"id": "c", "status": "ok", "reason": "", "confidence": {"score": 0.5}},
             {"id": "c", "status": "failed", "reason": "gone"},
             {"id": "a", "status": "ok", "reason": "", "confidence": {"score": 0.7}}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"id\": \"cut")
    assert read_confidences(tmp_path) == {"a": {"score": 0.7}}


@pytest.fixture
def labelled(tmp_path):
    """8 images with masks; their labels are the masks damaged by a growing amount, and their
    recorded confidence falls with the damage (the least damaged: most confident)."""
    root, out = tmp_path / "data", tmp_path / "labels"
    (root / "images").mkdir(parents=True)
    out.mkdir()
    rng = np.random.default_rng(0)
    tags, entries = {}, []
    for i in range(8):
        mask = np.zeros((32, 32), np.uint8)
        mask[4:28, 4:28] = 1 + i % 2
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        write_label_png(root / "masks" / f"im{i}.png", mask)
        label = mask.copy()
        label[4:4 + 3 * i, 4:28] = 0  # damage grows with i
        write_label_png(out / f"im{i}.png", label)
        tags[f"im{i}.png"] = ["a" if i % 2 == 0 else "b"]
        entries.append({"id": f"im{i}", "status": "ok", "reason": "",
                        "confidence": {"score": 1.0 - 0.1 * i, "tag_prob": 0.9, "map_support": 0.5,
                                       "ignore_share": 0.0, "crf_changed": 0.0}})
    write_folder_dataset_index(root, ["a", "b"], tags)
    (out / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return FolderDataset(root), out


def test_review_queue_lists_the_least_confident_and_measures_the_ranking(labelled):
    dataset, out = labelled
    queue = review_queue(out, dataset, count=3)
    assert queue.ids == ["im7", "im6", "im5"]
    assert queue.miou["im0"] == 1.0 and queue.miou["im7"] < queue.miou["im1"]
    assert queue.correlation["score"] == 1.0  # confidence falls exactly as the damage grows
    assert "tag_prob" not in queue.correlation  # constant: no ranking to measure
    assert "Spearman ρ = 1.00" in queue.summary()
    as_json = queue.to_dict()
    assert as_json["images"] == 8 and as_json["least_confident"] == ["im7", "im6", "im5"]


def test_review_queue_without_masks_says_nothing_about_quality(labelled, tmp_path):
    dataset, out = labelled
    for path in (dataset.root / "masks").glob("*.png"):
        path.unlink()
    (dataset.root / "masks").rmdir()
    queue = review_queue(out, FolderDataset(dataset.root), count=2)
    assert queue.ids == ["im7", "im6"] and queue.miou is None and queue.correlation is None


def test_ignore_pixels_lower_the_score(labelled):
    tags = np.array([1, 0])
    refined = torch.ones(2, 4, 4)
    clean = torch.ones(4, 4, dtype=torch.long)
    holed = clean.clone()
    holed[:2] = IGNORE_INDEX
    probs = torch.tensor([0.9, 0.1])
    assert label_confidence(tags, probs, refined, holed, holed)["score"] < \
        label_confidence(tags, probs, refined, clean, clean)["score"]


def test_worst_found_counts_the_worst_labels_at_the_head_of_the_queue(tmp_path):
    """40 labels, damage growing with the index: a confidence that follows the damage puts the 2
    worst (5 %) first (worst_found 1); one that follows it backwards puts them last (0)."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    tags = {}
    for name, order in (("right", 1), ("backwards", -1)):
        out = tmp_path / name
        out.mkdir()
        entries = []
        for i in range(40):
            mask = np.zeros((16, 16), np.uint8)
            mask[:, :12] = 1
            if name == "right":
                Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(root / "images" / f"im{i}.png")
                write_label_png(root / "masks" / f"im{i}.png", mask)
                tags[f"im{i}.png"] = ["a"]
            label = mask.copy()
            label.reshape(-1)[np.flatnonzero(mask)[: 4 * i]] = 0  # 4 more pixels lost at each step
            write_label_png(out / f"im{i}.png", label)
            entries.append({"id": f"im{i}", "status": "ok", "confidence": {"score": order * (1.0 - i / 40)}})
        (out / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    write_folder_dataset_index(root, ["a"], tags)
    dataset = FolderDataset(root)
    assert review_queue(tmp_path / "right", dataset, count=2).worst_found == 1.0
    backwards = review_queue(tmp_path / "backwards", dataset, count=2)
    assert backwards.worst_found == 0.0 and "hold 0% of the 5% worst labels" in backwards.summary()
