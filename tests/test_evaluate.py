import json

import numpy as np
import pytest

from wsss.data.npz_maps import write_npz
from wsss.cli import main
from wsss.data import FolderDataset
from wsss.data.label_png import read_label_png, write_label_png
from wsss.eval.evaluate import evaluate_label_dir, labels_from_maps, sweep_map_thresholds
from wsss.eval.stages import evenly_spaced


def test_perfect_and_broken_predictions(folder_dataset, tmp_path, capsys):
    dataset = FolderDataset(folder_dataset)
    pred = tmp_path / "pred"
    for image_id in dataset.ids[:-1]:
        write_label_png(pred / f"{image_id}.png", read_label_png(dataset.mask_path(image_id)))
    result = evaluate_label_dir(pred, dataset, progress=False)
    assert result.confusion.miou == pytest.approx(1.0)
    assert result.missing == {dataset.ids[-1]: "no prediction"}
    write_label_png(pred / f"{dataset.ids[0]}.png", np.zeros((40, 48), np.uint8))  # all background
    assert evaluate_label_dir(pred, dataset, progress=False).confusion.miou < 1.0
    assert main(["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset), "--json", str(tmp_path / "e.json")]) == 0
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["not_scored"] == 1 and scores["IoU"]["background"] < 1.0 and "mIoU" in capsys.readouterr().out


def test_labels_from_maps():
    maps = np.array([[[0.9, 0.2], [0.1, 0.6]], [[0.5, 0.7], [0.05, 0.3]]], np.float32)
    label = labels_from_maps(maps, np.array([2, 0]), threshold=0.4)
    assert label.tolist() == [[3, 1], [0, 3]]
    assert labels_from_maps(np.zeros((0, 2, 2)), np.array([], int), 0.5).tolist() == [[0, 0], [0, 0]]


def test_threshold_sweep_finds_the_separating_threshold(folder_dataset, tmp_path):
    dataset = FolderDataset(folder_dataset)
    for image_id in dataset.ids:
        mask = read_label_png(dataset.mask_path(image_id))
        present = np.flatnonzero(dataset.load(image_id).tags)
        maps = np.stack([np.where(mask == c + 1, 0.8, 0.3) for c in present]).astype(np.float16)
        write_npz(tmp_path / "maps" / f"{image_id}.npz", maps=maps, classes=present)
    best, curve = sweep_map_thresholds(tmp_path / "maps", dataset, thresholds=(0.2, 0.5, 0.9), progress=False)
    assert best.threshold == 0.5 and best.confusion.miou == pytest.approx(1.0)
    assert curve[0.2] < 1.0 and curve[0.9] < 1.0


def test_evenly_spaced_picks_the_stage_table_images():
    ids = [f"img{i}" for i in range(10)]
    assert evenly_spaced(ids, 3) == ["img0", "img3", "img6"]
    assert evenly_spaced(ids, None) == ids and evenly_spaced(ids, 20) == ids
