"""`wsss pseudo-label` and `wsss report` end to end on a tiny trained classifier."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.cli import main
from wsss.data import FolderDataset
from wsss.data.label_png import read_label_png
from tests.runs import classifier_of
from tests.test_classifier import tiny_config


def test_pseudo_label_writes_labels_and_resumes(tmp_path, capsys):
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    data, out = tmp_path / "data", tmp_path / "labels"
    args = ["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
            "--out", str(out), "--save-maps", "--set", "refine.crf.enabled=true", "--set", "refine.crf.workers=1",
            "--set", "refine.label.opening=3"]
    assert main(args) == 0
    dataset = FolderDataset(data, split="val")
    for image_id in dataset.ids:
        label = read_label_png(out / f"{image_id}.png")
        sample = dataset.load(image_id)
        assert label.shape == sample.image.shape[:2]
        allowed = {0, 255} | {c + 1 for c in np.flatnonzero(sample.tags)}
        assert set(np.unique(label).tolist()) <= allowed
        saved = np.load(out / "maps" / f"{image_id}.npz")
        assert saved["maps"].shape[0] == saved["probs"].shape[0] == int(sample.tags.sum())
    # every label's confidence is in its manifest entry (the review queue ranks by it)
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {e["id"] for e in entries} == set(dataset.ids)
    for entry in entries:
        c = entry["confidence"]
        assert set(c) == {"tag_prob", "map_support", "map_outside", "ignore_share", "crf_changed", "crf_changed_rel",
                          "ignore_rel", "tags", "score"}
        assert c["tag_prob"] is not None and c["tags"] == int(dataset.load(entry["id"], masks=False).tags.sum())
        assert all(0.0 <= c[k] <= 1.0 for k in c if k not in ("tags", "crf_changed_rel", "ignore_rel"))
        assert c["crf_changed_rel"] >= c["crf_changed"] and c["ignore_rel"] >= c["ignore_share"]
        assert (out / "doubt" / f"{entry['id']}.png").is_file()  # what the review page marks
    scores = json.loads((out / "evaluation.json").read_text())
    assert 0.0 <= scores["mIoU"] <= 1.0 and scores["not_scored"] == 0
    assert "saliency: tokencut" in capsys.readouterr().out
    assert main(args) == 0
    assert f"0 written, {len(dataset)} already there" in capsys.readouterr().out


def test_report_writes_stage_table_and_page(tmp_path, capsys):
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    out = tmp_path / "report"
    assert main(["report", "--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "data"), "--split", "val",
                 "--out", str(out), "--methods", "getam,rollout", "--set", "refine.crf.workers=1",
                 "--set", "refine.label.opening=3", "--set", "report.stage_images=3", "--set", "cam.flip=true"]) == 0
    text = capsys.readouterr().out
    assert "getam" in text and "rollout" in text and "trivial baseline" in text
    report = json.loads((out / "report.json").read_text())  # the pipeline's layout, without a segmenter
    assert report["stage_images"] == 3  # report.stage_images of the split's 5
    assert report["segmenter"] is None and report["checks"]["getam_beats_baselines"] in (True, False)
    assert "map views: scale 1, mirrored" in report["notes"]
    rows = report["stages"]
    assert [r["method"] for r in rows] == ["getam", "rollout", "trivial baseline"]
    for row in rows[:2]:
        assert all(0.0 <= row[k] <= 100.0 for k in ("raw", "+PAMR", "+saliency, conflict", "+CRF"))
    page = (out / "report.html").read_text()
    assert "Stages" in page and "Per-class IoU" in page and page.count("data:image/png") >= 5
    assert "map views: scale 1, mirrored" in page


def test_saved_maps_labeler_equals_the_chain_on_the_same_maps(tmp_path):
    """SavedMapsLabeler reads OUT/maps/<id>.npz and runs the rule (+CRF) only: its labels equal
    the chain's on the saved maps; missing maps or maps of other tags raise ValueError."""
    import pytest
    import torch

    from wsss.data.npz_maps import write_npz
    from wsss.config import load_config
    from wsss.refine.chain import LabelChain, saved_maps_labeler
    from wsss.refine.saliency import FolderSaliency

    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    data, out = tmp_path / "data", tmp_path / "labels"
    assert main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
                 "--out", str(out), "--save-maps", "--set", "refine.saliency.source=none",
                 "--set", "refine.label.opening=3"]) == 0
    # a saliency folder: the left half of every image
    (tmp_path / "sal").mkdir()
    dataset = FolderDataset(data, split="val", saliency_dir=tmp_path / "sal")
    for image_id in dataset.ids:
        h, w = dataset.load(image_id).image.shape[:2]
        half = np.zeros((h, w), np.uint8)
        half[:, : w // 2] = 255
        Image.fromarray(half).save(tmp_path / "sal" / f"{image_id}.png")
    dataset = FolderDataset(data, split="val", saliency_dir=tmp_path / "sal")
    refine = load_config(None, ["refine.saliency.source=folder", "refine.label.opening=3"]).refine
    labeler = saved_maps_labeler(out / "maps", refine, dataset)
    samples = [dataset.load(i) for i in dataset.ids[:1]]
    result = labeler(samples)
    saved = np.load(out / "maps" / f"{samples[0].id}.npz")
    maps = torch.zeros(1, len(dataset.classes), *samples[0].image.shape[:2])
    maps[0, saved["classes"]] = torch.from_numpy(saved["maps"].astype(np.float32))
    chain = LabelChain(refine.pamr.model_copy(update={"enabled": False}), refine.label)
    expected = chain(maps, torch.from_numpy(samples[0].tags[None]), torch.from_numpy(samples[0].image).permute(2, 0, 1)[None],
                     FolderSaliency(dataset)(samples, size=samples[0].image.shape[:2]))
    assert torch.equal(result.labels, expected.labels) and result.saliency[0][:, -1].sum() == 0
    (out / "maps" / f"{samples[0].id}.npz").unlink()
    with pytest.raises(ValueError, match="no saved maps"):
        labeler(samples)
    other = np.flatnonzero(samples[0].tags == 0)[:1]
    write_npz(out / "maps" / f"{samples[0].id}.npz", maps=saved["maps"][:1], classes=other.astype(np.int16))
    with pytest.raises(ValueError, match="do not fit image"):
        labeler(samples)


def test_checkpoint_without_config_uses_its_runs_settings_and_folders_keep_one_source(tmp_path, capsys):
    """`--checkpoint RUN/classifier/classifier.pt` without --config takes RUN/config.yaml (and
    says so); labels of another checkpoint or method are not mixed into a folder (exit 2)."""
    from wsss.config import config_to_yaml

    config = tiny_config(tmp_path, "train.classifier.epochs=1", "refine.label.opening=2", "cam.method=rollout")
    checkpoint = classifier_of(config, progress=False)
    (tmp_path / "run" / "config.yaml").write_text(config_to_yaml(config))
    out = tmp_path / "labels"
    args = ["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "data"), "--split", "val",
            "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"settings: {tmp_path / 'run' / 'config.yaml'}, the run that made" in printed
    source = json.loads((out / "source.json").read_text())
    assert source["cam"]["method"] == "rollout" and source["refine"]["label"]["opening"] == 2
    assert source["data"] == {"saliency_dir": None, "max_side": 1024, "oversize": "resize"}
    assert main([*args, "--method", "getam"]) == 2  # another method into the same folder
    assert "would mix two kinds of outputs" in capsys.readouterr().err
    assert main([*args, "--set", "data.max_side=64"]) == 2  # another size limit: other labels for big images
    assert "data.max_side: 1024 → 64" in capsys.readouterr().err
    (tmp_path / "run" / "config.yaml").unlink()
    assert main([*args[:-1], str(tmp_path / "other")]) == 0
    assert "settings: the built-in defaults" in capsys.readouterr().out


def test_a_runs_stored_settings_find_its_folders_from_anywhere(tmp_path):
    """RUN/config.yaml holds paths relative to the folder the run started in (run_dir
    runs/demo, data.root runs/demo/data); used through --checkpoint from elsewhere they point
    into that folder, except those given with --set."""
    from wsss.cli.arguments import _relocated
    from wsss.config import load_config

    run = tmp_path / "project" / "runs" / "demo"
    config = load_config(None, ["run_dir=runs/demo", "data.root=runs/demo/data", "data.saliency_dir=sal"])
    moved = _relocated(config, run, [])
    assert (moved.run_dir, moved.data.root, moved.data.saliency_dir) == (
        run, tmp_path / "project" / "runs" / "demo" / "data", tmp_path / "project" / "sal")
    given = ["run_dir=runs/demo", "data.root=elsewhere"]
    kept = _relocated(load_config(None, given), run, given[1:])
    assert kept.data.root == Path("elsewhere") and kept.run_dir == run
    renamed = _relocated(config, tmp_path / "copied_run", [])  # the run folder was renamed: left as stored
    assert renamed.run_dir == Path("runs/demo") and renamed.data.root == Path("runs/demo/data")


def test_report_with_labels_writes_the_review_page(tmp_path, capsys):
    """`wsss report --labels DIR`: review.html lists the least confident labels with their
    pictures, and report.json says how well the confidence ranks them against the masks."""
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    data, labels, out = tmp_path / "data", tmp_path / "labels", tmp_path / "report"
    common = ["--set", "refine.crf.workers=1", "--set", "refine.label.opening=3"]
    assert main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
                 "--out", str(labels), "--save-maps", *common]) == 0
    assert main(["report", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
                 "--out", str(out), "--methods", "getam", "--labels", str(labels), "--set", "report.review_images=3",
                 "--set", "report.stage_images=2", *common]) == 0
    review = json.loads((out / "report.json").read_text())["review"]
    assert review["page"] == "review.html" and review["images"] == 5 and len(review["least_confident"]) == 3
    scores = [review["confidence"][i]["score"] for i in review["least_confident"]]
    assert scores == sorted(scores)  # least confident first
    assert set(review["rank_correlation"]) <= {"score", "tag_prob", "map_support", "map_outside", "ignore_share",
                                               "crf_changed", "crf_changed_rel", "ignore_rel", "tags"}
    assert all(-1.0 <= v <= 1.0 for v in review["rank_correlation"].values()) and review["miou"]
    assert review["worst_found"] is None  # 5 labels: no 5 % to speak of
    page = (out / "review.html").read_text()
    # image, map, label, doubt, truth; each caption with the label's true mIoU
    assert "least confident" in page and page.count("data:image/png") == 3 * 5 and page.count("true mIoU") == 3
    assert "the review page: review.html" in (out / "report.html").read_text()
    assert main(["report", "--checkpoint", str(checkpoint), "--dataset", str(data), "--out", str(out),
                 "--labels", str(tmp_path / "nothing")]) == 2
    assert "--labels" in capsys.readouterr().err
