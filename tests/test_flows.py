"""The Prefect flows against a temporary Prefect server: shards on threads and on a local Dask
cluster, skip-on-disk, artifacts, kill and resume, failures, the inbox, the whole pipeline.

One ``prefect_test_harness`` serves the module (it takes ~10 s to start); every test uses a
tiny random ViT on 20 generated 48×48 images.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from prefect.settings import PREFECT_API_URL, PREFECT_HOME
from PIL import Image

from flows.label_inbox import label_inbox
from flows.pipeline import pipeline
from flows.pseudo_labels import pseudo_labels
from flows.training import train_segmenter
from wsss.config import config_to_yaml, load_config
from wsss.data.label_png import read_label_png
from wsss.data.manifest import read_manifest
from wsss.steps.labels_step import open_labels
from tests.runs import classifier_of

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IDS = 16  # 20 images, val_fraction 0.2


def flow_config(tmp: Path, *extra: str):
    """A tiny run in ``tmp``: 20 synthetic 48×48 images, a 2-block ViT, shards of 4."""
    return load_config(None, [
        f"run_dir={tmp / 'run'}", f"data.root={tmp / 'data'}", "data.synth.num_images=20",
        "data.synth.image_size=48", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=2", "model.num_heads=2", "train.device=cpu", "train.classifier.epochs=1",
        "train.classifier.batch_size=8", "train.classifier.warmup_epochs=0", "refine.label.opening=3",
        "refine.crf.enabled=true", "refine.crf.workers=1", "flow.shard_size=4", "flow.torch_threads=1",
        "flow.retries=1", "flow.retry_delay_seconds=0", "flow.examples=2", "train.segmenter.steps=4",
        "train.segmenter.batch_size=2", "train.segmenter.dpt.features=16", "train.segmenter.threads=1",
        "predict.batch_size=4", "train.classifier.gate.force=true", *extra,  # 1 epoch on 16 images: near chance
    ])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_api):
    """(folder, config, classifier.pt, reference labels of the training split by the thread runner)."""
    tmp = tmp_path_factory.mktemp("flows")
    config = flow_config(tmp)
    checkpoint = classifier_of(config, progress=False)
    summary = pseudo_labels(config, checkpoint=checkpoint, out_dir=tmp / "threads")
    assert summary["ok"] == TRAIN_IDS and summary["failed"] == 0
    return tmp, config, checkpoint, summary


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def labels_in(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_label_png(p) for p in sorted(folder.glob("*.png")) if not p.name.startswith(".")}


def api_read(path: str, body: dict) -> list[dict]:
    """POST a read to the API with a complete body (this server answers 422 to the client's
    null filters, and an empty flow-run filter matches nothing)."""
    response = httpx.post(f"{PREFECT_API_URL.value()}/{path}", json={"offset": 0, "limit": 50, **body}, timeout=30)
    response.raise_for_status()
    return response.json()


def latest_artifact(key: str) -> dict:
    found = api_read("artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
    assert found, f"no artifact {key!r}"
    return found[0]


def shard_task_runs(state) -> list[dict]:
    """The label-shard task runs of the flow run that ended in ``state``."""
    flow_run_id = str(state.state_details.flow_run_id)
    runs = api_read("task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return [run for run in runs if run["name"].startswith("label-shard")]


def shard_states(state) -> list[str]:
    return sorted(run["state_name"] for run in shard_task_runs(state))


def task_run_counts(state) -> list[int]:
    """Attempts of each label-shard task of the flow run that ended in ``state``."""
    return sorted(run["run_count"] for run in shard_task_runs(state))


def test_threads_run_writes_labels_manifest_and_artifacts(trained):
    tmp, config, _, summary = trained
    out = tmp / "threads"
    assert summary["model_loads"] <= config.flow.max_workers  # once per worker thread, not per shard
    assert 0.0 <= summary["mIoU"] <= 1.0
    manifest = read_manifest(out / "manifest.jsonl")
    assert len(manifest) == TRAIN_IDS and all(e["status"] == "ok" for e in manifest.values())
    assert json.loads((out / "source.json").read_text())["cam"]["method"] == "getam"
    assert latest_artifact("pseudo-labels-progress")["data"] == 100.0
    table = latest_artifact("pseudo-labels-evaluation")["data"]
    rows = json.loads(table) if isinstance(table, str) else table
    assert rows[-1]["class"] == "mean" and rows[-1]["IoU %"] == round(100 * summary["mIoU"], 1)
    markdown = latest_artifact("pseudo-labels-examples")["data"]
    assert markdown.count("data:image/png;base64,") == 2 and "ground truth" in markdown


@pytest.mark.slow
def test_dask_cluster_equals_thread_runner(trained):
    tmp, config, checkpoint, _ = trained
    dask = config.model_copy(update={"flow": config.flow.model_copy(update={"task_runner": "dask", "max_workers": 2})})
    summary = pseudo_labels(dask, checkpoint=checkpoint, out_dir=tmp / "dask")
    assert summary["ok"] == TRAIN_IDS and 1 <= summary["model_loads"] <= 2
    reference, labels = labels_in(tmp / "threads"), labels_in(tmp / "dask")
    assert sorted(labels) == sorted(reference)
    for image_id, label in reference.items():
        assert np.array_equal(labels[image_id], label), image_id


def test_rerun_skips_finished_images_and_redoes_deleted_ones(trained, tmp_path):
    tmp, config, checkpoint, _ = trained
    out = tmp_path / "labels"
    shutil.copytree(tmp / "threads", out)
    lines = (out / "manifest.jsonl").read_text().count("\n")
    for run in range(2):  # the first run finds every shard complete on disk; the second, in the cache
        state = pseudo_labels(config, checkpoint=checkpoint, out_dir=out, return_state=True)
        summary = state.result()
        assert (summary["ok"], summary["skipped"], summary["model_loads"]) == (0, TRAIN_IDS, 0)
        assert (out / "manifest.jsonl").read_text().count("\n") == lines
        assert shard_states(state) == (["Completed"] * 4 if run == 0 else ["Cached"] * 4)
    victim = sorted(out.glob("*.png"))[3]
    reference = read_label_png(victim)
    victim.unlink()  # the cached shard holding it must run again: the cache key sees what is missing
    summary = pseudo_labels(config, checkpoint=checkpoint, out_dir=out)
    assert (summary["ok"], summary["skipped"]) == (1, TRAIN_IDS - 1)
    assert np.array_equal(read_label_png(victim), reference)
    victim.write_bytes(b"")  # an empty file left by something else is not a label: redone
    summary = pseudo_labels(config, checkpoint=checkpoint, out_dir=out)
    assert (summary["ok"], summary["skipped"]) == (1, TRAIN_IDS - 1)
    assert np.array_equal(read_label_png(victim), reference)
    assert victim.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable as the umask allows
    other = config.model_copy(update={"cam": config.cam.model_copy(update={"method": "rollout"})})
    with pytest.raises(ValueError, match="other settings \\(cam.method"):
        pseudo_labels(other, checkpoint=checkpoint, out_dir=out)


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_or_corrupting(trained, tmp_path, prefect_api):
    tmp, config, checkpoint, _ = trained
    slow = flow_config(tmp, "flow.shard_size=1", "flow.max_workers=1")
    config_file, out = tmp_path / "config.yaml", tmp_path / "labels"
    config_file.write_text(config_to_yaml(slow))
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-m", "wsss", "flow", "run", "pseudo-labels", "--config", str(config_file),
         "--param", f"out_dir={out}", "--param", f"checkpoint={checkpoint}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    try:
        while len(read_manifest(out / "manifest.jsonl")) < 3:
            assert process.poll() is None, "the flow ended before it could be killed"
            assert time.monotonic() < deadline, "the flow wrote no labels in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("[!.]*.png")}
    assert 3 <= len(done) < TRAIN_IDS, "the kill did not land mid-run"

    summary = pseudo_labels(slow, checkpoint=checkpoint, out_dir=out)
    assert summary["skipped"] == len(done) and summary["ok"] == TRAIN_IDS - len(done)
    for name, (mtime, data) in done.items():  # finished images were not redone
        assert (out / name).stat().st_mtime_ns == mtime and (out / name).read_bytes() == data
    reference, labels = labels_in(tmp / "threads"), labels_in(out)
    assert sorted(labels) == sorted(reference) and not list(out.glob(".*.png"))
    for image_id, label in reference.items():
        assert np.array_equal(labels[image_id], label), image_id
    manifest = read_manifest(out / "manifest.jsonl")
    assert sorted(manifest) == sorted(reference) and all(e["status"] == "ok" for e in manifest.values())


def test_corrupt_image_fails_alone_and_only_io_errors_retry(trained, tmp_path):
    tmp, config, checkpoint, _ = trained
    data = tmp_path / "data"
    shutil.copytree(tmp / "data", data)
    train_ids = (data / "splits" / "train.txt").read_text().split()
    corrupt = data / "images" / f"{train_ids[5]}.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated JPEG
    local = config.model_copy(update={"data": config.data.model_copy(update={"root": data})})
    summary = pseudo_labels(local, checkpoint=checkpoint, out_dir=tmp_path / "labels")
    assert (summary["ok"], summary["failed"]) == (TRAIN_IDS - 1, 1)
    entry = read_manifest(tmp_path / "labels" / "manifest.jsonl")[train_ids[5]]
    assert entry["status"] == "failed" and "cannot decode" in entry["reason"]

    # an I/O error (a folder where a label should go) is retried, then fails its shard and the flow
    blocked = tmp_path / "blocked"
    open_labels(config, checkpoint, config.data.train_split, blocked)  # the folder is this run's (source.json) ...
    (blocked / f"{train_ids[0]}.png").mkdir(parents=True)  # ... and a folder stands where a label should go
    state = pseudo_labels(config, checkpoint=checkpoint, out_dir=blocked, return_state=True)
    assert state.is_failed() and "1 of 4 shard(s) failed" in state.message
    assert task_run_counts(state) == [1, 1, 1, 1 + config.flow.retries]
    # any other error (the checkpoint's classes do not fit the data set) is not retried
    (data / "classes.txt").write_text("a\nb\nc\nd\ne\nf\n")
    state = pseudo_labels(local, checkpoint=checkpoint, out_dir=tmp_path / "other", return_state=True)
    assert state.is_failed() and "classes" in state.message
    assert task_run_counts(state) == [1, 1, 1, 1]


def add_to_inbox(inbox: Path, data: Path, ids: list[str]) -> None:
    """Copy images of the generated set into the inbox and append their rows to tags.csv."""
    (inbox / "images").mkdir(parents=True, exist_ok=True)
    rows = {line.split(",")[0]: line for line in (data / "tags.csv").read_text().splitlines()[1:]}
    tags = inbox / "tags.csv"
    if not tags.is_file():
        tags.write_text("image,tags\n")
    with tags.open("a") as handle:
        for image_id in ids:
            shutil.copy(data / "images" / f"{image_id}.jpg", inbox / "images")
            handle.write(rows[f"{image_id}.jpg"] + "\n")


def test_label_inbox_labels_only_what_is_new(trained, tmp_path):
    tmp, config, checkpoint, _ = trained
    inbox = tmp_path / "inbox"
    segmenter = train_segmenter(config)
    settings = config.model_copy(update={"flow": config.flow.model_copy(update={"inbox": config.flow.inbox.model_copy(
        update={"folder": inbox, "out": tmp_path / "out", "classifier": checkpoint, "segmenter": segmenter,
                "settle_seconds": 0.0})})})
    ids = (tmp / "data" / "splits" / "val.txt").read_text().split()
    add_to_inbox(inbox, tmp / "data", ids[:2])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(inbox / "images" / "untagged.png")
    (inbox / "images" / "broken.jpg").write_bytes(b"not an image")
    with (inbox / "tags.csv").open("a") as handle:
        handle.write("broken.jpg,disk\n")
    first = label_inbox(settings)
    assert (first["labelled"], first["failed"], first["untagged"], first["predicted"]) == (2, 1, 1, 2)
    assert read_label_png(tmp_path / "out" / "predictions" / f"{ids[0]}.png").shape == (48, 48)
    labels = tmp_path / "out" / "labels"
    stamps = {p.name: p.stat().st_mtime_ns for p in labels.glob("*.png")}
    assert (inbox / "classes.txt").read_text().split() == ["disk", "square", "triangle", "star", "ring", "cross"]

    add_to_inbox(inbox, tmp / "data", ids[2:3])
    second = label_inbox(settings)
    assert (second["labelled"], second["failed"], second["predicted"]) == (1, 0, 1)  # broken: unchanged, not retried
    assert {p.name: p.stat().st_mtime_ns for p in labels.glob("*.png") if p.name in stamps} == stamps
    lines = [json.loads(line) for line in (labels / "manifest.jsonl").read_text().splitlines()]
    assert [(e["id"], e["status"]) for e in lines] == [
        ("broken", "failed"), (ids[0], "ok"), (ids[1], "ok"), (ids[2], "ok")]

    shutil.copy(tmp / "data" / "images" / f"{ids[3]}.jpg", inbox / "images" / "broken.jpg")  # fixed
    third = label_inbox(settings)
    assert (third["labelled"], third["failed"]) == (1, 0)

    # a tag corrected in tags.csv: that image is labelled again; its prediction (tags do not change it) stays
    lines = (inbox / "tags.csv").read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(f"{ids[0]}.jpg,"))
    old_tags = lines[row].split(",", 1)[1].split(";")
    new_tags = [name for name in ["disk", "square", "triangle"] if name not in old_tags][:1] + old_tags[1:]
    lines[row] = f"{ids[0]}.jpg," + ";".join(new_tags)
    (inbox / "tags.csv").write_text("\n".join(lines) + "\n")
    prediction = (tmp_path / "out" / "predictions" / f"{ids[0]}.png").stat().st_mtime_ns
    fourth = label_inbox(settings)
    assert (fourth["labelled"], fourth["failed"], fourth["predicted"]) == (1, 0, 0)
    entry = read_manifest(labels / "manifest.jsonl")[ids[0]]
    assert entry["input"]["tags"] == sorted(new_tags) and entry["redone"].startswith("tags changed")
    assert (tmp_path / "out" / "predictions" / f"{ids[0]}.png").stat().st_mtime_ns == prediction


def test_pipeline_end_to_end(tmp_path, prefect_api):
    config = flow_config(tmp_path, "flow.examples=1", "predict.crf=true", "predict.guided_filter.radius=1",
                         "report.stage_images=3",
                         "report.notes=['two stage, same data: 84.4']")
    summary = pipeline(config, methods=["getam", "rollout"])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "two stage, same data: 84.4" in report["notes"]  # report.notes
    assert any(note.startswith("segmenter mode: single_stage") for note in report["notes"])
    assert [row["method"] for row in report["stages"]] == ["getam", "rollout", "trivial baseline"]
    assert report["stage_images"] == 3
    segmenter = report["segmenter"]
    assert 0.0 <= segmenter["mIoU"] <= 100.0 and segmenter["mIoU"] == summary["segmenter_mIoU"]
    metrics = json.loads((tmp_path / "run" / "segmenter" / "metrics.json").read_text())  # from training
    assert segmenter["predict"]["crf"] is True
    assert segmenter["mIoU_without_crf"] == 100.0 * metrics["segmenter_without_crf"]["mIoU"]
    assert segmenter["mIoU_without_filter"] == 100.0 * metrics["segmenter_without_filter"]["mIoU"]  # the guided filter's
    assert 0.0 <= segmenter["mIoU_without_filter_on_stage_images"] <= 100.0
    assert segmenter["inloop_labels_mIoU"] == 100.0 * metrics["pseudo_labels"]["mIoU"]
    rollout, trivial = report["stages"][1]["+CRF"], report["stages"][-1]["+CRF"]
    on_same = segmenter["mIoU_on_stage_images"]  # the 3 stage-table images of the 4 validation images
    assert 0.0 <= on_same <= 100.0
    assert 0.0 <= segmenter["mIoU_without_crf_on_stage_images"] <= 100.0  # the argmax on the same 3 images
    assert report["checks"]["segmenter_beats_baselines_and_trivial"] == (on_same > max(rollout, trivial))
    assert report["pseudo_labels"]["ok"] == TRAIN_IDS and report["images_per_s"]["pseudo_labels"] > 0
    assert set(report["timings_s"]) >= {"train_classifier", "pseudo_labels", "train_segmenter", "stage_table", "total"}
    assert set(report["checks"]) == {"getam_beats_baselines", "getam_beats_trivial",
                                     "segmenter_beats_baselines_and_trivial"}
    quality = report["classifier"]  # the gate's reading (forced past it: a 1-epoch classifier)
    assert len(quality["AP"]) == 6 and quality["passed"] in (True, False) and "weak_classes" in quality
    shares = report["pseudo_labels"]["label_shares"]
    assert shares["images"] == TRAIN_IDS and abs(shares["foreground"] + shares["background"] + shares["ignore"] - 1) < 1e-3
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Classifier (validation split)" in page and "prevalence (chance AP)" in page
    assert "segmenter (single_stage, guided filter, +CRF)" in page and "no CRF" in page and "in-loop pseudo-labels" in page
    assert "segmenter (single_stage) alone: no filter, no CRF" in page
    assert "trivial baseline" in page
    assert "<th>segmenter</th>" in page  # its prediction beside each example's pseudo-label
    review = report["review"]  # the review queue of the training split's pseudo-labels
    assert review["images"] == TRAIN_IDS and review["page"] == "review.html" and review["least_confident"]
    assert review["rank_correlation"] is not None
    assert "least confident" in (tmp_path / "run" / "review.html").read_text()


def test_demo_out_dir_uses_its_own_classifier(tmp_path, prefect_api, monkeypatch):
    """``wsss demo --out X`` is self-contained: its segmenter starts from X's classifier, not
    from one that sits in ./runs/demo (the config names no other run's file)."""
    from wsss.cli import main
    from wsss.models.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(PREFECT_HOME.value()))
    decoy = classifier_of(flow_config(tmp_path / "decoy", "run_dir=runs/demo", "train.classifier.seed=1"),
                          progress=False)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(config_to_yaml(flow_config(  # every class in both splits (data check)
        tmp_path, "data.synth.num_images=40", "data.synth.val_fraction=0.4")))
    settings = ["train.segmenter.mode=two_stage", "train.segmenter.init=classifier", "train.segmenter.steps=1",
                "train.segmenter.phase1_fraction=0", "train.segmenter.optimizer=adamw", "train.segmenter.lr=1e-12",
                "train.segmenter.weight_decay=0", "report.stage_images=2"]
    assert main(["demo", "--out", "X", "--config", str(config_file), *[a for s in settings for a in ("--set", s)]]) == 0
    backbone = {k.removeprefix("backbone."): v for k, v in load_checkpoint(
        tmp_path / "X" / "segmenter_two_stage" / "segmenter.pt")["model"].items() if k.startswith("backbone.")}
    own = load_checkpoint(tmp_path / "X" / "classifier" / "classifier.pt")["model"]
    other = load_checkpoint(decoy)["model"]
    key = "blocks.0.attn.qkv.weight"
    assert torch.allclose(backbone[key], own[key], atol=1e-6)  # one step at lr 1e-12: still X's classifier
    assert not torch.allclose(backbone[key], other[key], atol=1e-3)
    assert (tmp_path / "X" / "report.json").is_file() and (tmp_path / "X" / "data" / "tags.csv").is_file()


def test_a_classifier_at_chance_stops_the_run_before_any_pseudo_label(tmp_path, prefect_api, monkeypatch, capsys):
    """The quality gate: ``wsss demo`` with a classifier that learned nothing (lr 1e-9) ends with
    the gate's message (what was measured, what to try) and writes no pseudo-label."""
    from wsss.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(PREFECT_HOME.value()))
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(config_to_yaml(flow_config(tmp_path, "data.synth.num_images=40", "data.synth.val_fraction=0.4")))
    settings = ["train.classifier.lr=1e-9", "train.classifier.gate.force=false"]
    assert main(["demo", "--out", "X", "--config", str(config_file), *[a for s in settings for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert "the classifier is too close to chance to label anything" in err and "mAP" in err and "prevalence" in err
    assert "Try: train longer (train.classifier.epochs)" in err and "train.classifier.gate.force=true" in err
    assert (tmp_path / "X" / "classifier" / "classifier.pt").is_file()
    assert not (tmp_path / "X" / "pseudo_labels").exists()


def test_pipeline_self_training_saliency_labels_with_the_first_round_segmenter(tmp_path, prefect_api):
    """``refine.saliency.source: segmenter``: round-1 labels without saliency, a first-round
    segmenter on them, its foreground as 0/255 maps for both splits; the kept labels and the
    stage table use those maps (a label re-made from them through the chain is the same PNG)."""
    from wsss.data import open_dataset
    from wsss.models.checkpoint import load_classifier
    from wsss.steps.self_training_saliency import saliency_config
    from wsss.refine.chain import offline_labeler, saved_maps_labeler

    config = flow_config(tmp_path, "refine.saliency.source=segmenter", "refine.saliency.self_training.steps=2",
                         "refine.saliency.self_training.scales=[1.0,1.5]", "refine.saliency.self_training.crf=true",
                         "train.segmenter.mode=two_stage",
                         "train.segmenter.init=classifier", "train.segmenter.phase1_fraction=0",
                         "report.stage_images=2", "flow.examples=0")
    pipeline(config, methods=["getam"])
    run = tmp_path / "run"
    first = run / "self_training"
    assert len(list((first / "pseudo_labels").glob("*.png"))) == TRAIN_IDS
    round1 = json.loads((first / "pseudo_labels" / "source.json").read_text())
    assert round1["refine"]["saliency"]["source"] == "none"
    kept = json.loads((run / "pseudo_labels" / "source.json").read_text())
    assert kept["refine"]["saliency"]["source"] == "folder"
    assert kept["data"]["saliency_dir"] == str(first / "saliency") and round1["data"]["saliency_dir"] is None
    assert (first / "segmenter" / "segmenter.pt").is_file()
    train, val = (open_dataset(config.data, s) for s in (config.data.train_split, config.data.val_split))
    for dataset in (train, val):
        for image_id in dataset.ids:
            mask = np.asarray(Image.open(first / "saliency" / f"{image_id}.png"))
            assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255}
    # the maps are the first-round segmenter's foreground through the two-label CRF (crf=true)
    from wsss.models.checkpoint import load_segmenter
    from wsss.predict import Predictor, start_foreground_masks

    segmenter, _, _ = load_segmenter(first / "segmenter" / "segmenter.pt")
    predictor = Predictor(segmenter, [1.0, 1.5], flip=True)
    images = [val.load(image_id).image for image_id in val.ids]
    crf = config.refine.crf.model_copy(update={"workers": 1})
    expected = start_foreground_masks(images, predictor(images), 0.5, crf)()
    for image_id, mask in zip(val.ids, expected):
        assert np.array_equal(np.asarray(Image.open(first / "saliency" / f"{image_id}.png")) == 255, mask)
    # the kept labels were made from round 1's saved maps with these saliency maps: re-make one
    # through the chain (maps computed afresh; the saved ones are float16, so compare the rule's
    # input maps loosely and the labels where the maps are not at a tie)
    labelling = saliency_config(config, require=True)
    dataset = open_dataset(labelling.data, config.data.train_split)
    model, _, _ = load_classifier(run / "classifier" / "classifier.pt")
    single = labelling.refine.model_copy(update={"crf": labelling.refine.crf.model_copy(update={"workers": 1})})
    sample = dataset.load(dataset.ids[0])
    assert sample.saliency is not None
    fresh = offline_labeler(model, config.cam, single, dataset)([sample])
    saved = saved_maps_labeler(first / "pseudo_labels" / "maps", single, dataset)([sample])
    assert torch.allclose(saved.refined, fresh.refined, atol=2e-3)
    assert torch.equal(saved.saliency[0], fresh.saliency[0])
    assert np.array_equal(read_label_png(run / "pseudo_labels" / f"{sample.id}.png"), saved.labels[0].numpy())
    assert (fresh.labels[0] == saved.labels[0]).float().mean() > 0.97
    report = json.loads((run / "report.json").read_text())
    assert any("self-training" in note for note in report["notes"])
    assert report["config"]["refine"]["saliency"]["source"] == "segmenter"
