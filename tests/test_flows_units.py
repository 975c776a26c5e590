"""The flows' building blocks without a Prefect server: shard planning, the shard cache key,
the label folder's source marker, the manifest, the inbox scan, the report's checks."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from wsss.data.folder import FolderDataset, write_folder_dataset_index
from wsss.data.label_png import write_label_png
from wsss.steps.inbox_scan import scan_inbox
from wsss.report.build import checks
from flows.task_runners import WhenShardLabelled
from wsss.config import Config, DataConfig, SamConfig
from wsss.data.input_records import input_record
from wsss.steps.provenance import claim_output_dir, source_differences
from wsss.steps.label_plan import (
    LabelJob, image_fingerprint, plan_shards, reconcile_manifest, unlabelled_ids,
)
from wsss.data.manifest import MANIFEST, Manifest, read_manifest


def test_plan_cuts_all_ids_and_notes_finished_ones(folder_dataset, tmp_path):
    dataset = FolderDataset(folder_dataset)
    write_label_png(tmp_path / "img1.png", np.zeros((4, 4), np.uint8))
    plan = plan_shards(dataset, dataset.ids, tmp_path, shard_size=4)
    assert [[i for i, _ in shard] for shard in plan.shards] == [["img0", "img1", "img2", "img3"], ["img4", "img5"]]
    assert plan.done == {"img1"} and plan.pending(plan.shards[0]) == 3 and plan.pending(plan.shards[1]) == 2
    assert plan.shards[0][0][1]["tags"] == ["disk"] and plan.shards[0][0][1]["size"] > 0
    with pytest.raises(ValueError, match="shard_size=0"):
        plan_shards(dataset, dataset.ids, tmp_path, shard_size=0)


def test_shard_cache_key_only_when_labelled_and_follows_the_images(folder_dataset, tmp_path):
    dataset = FolderDataset(folder_dataset)
    shard = [[i, image_fingerprint(dataset, i)] for i in ("img0", "img1")]
    config = Config(data=DataConfig(format="folder", root=folder_dataset))
    job = LabelJob(config, tmp_path / "classifier.pt", "abc", "train", tmp_path)
    inputs = {"job": job, "shard": shard}
    policy = WhenShardLabelled()
    assert policy.compute_key(None, inputs, {}) is None  # nothing labelled: no key, the task runs
    write_label_png(tmp_path / "img0.png", np.zeros((4, 4), np.uint8))
    assert unlabelled_ids(["img0", "img1"], tmp_path) == ["img1"] and policy.compute_key(None, inputs, {}) is None
    write_label_png(tmp_path / "img1.png", np.zeros((4, 4), np.uint8))
    key = policy.compute_key(None, inputs, {})
    assert key is not None and key == policy.compute_key(None, dict(inputs), {})
    other = LabelJob(config, tmp_path / "classifier.pt", "other", "train", tmp_path)
    assert policy.compute_key(None, {**inputs, "job": other}, {}) != key  # another checkpoint
    image = folder_dataset / "images" / "img0.png"
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))  # the image was replaced
    touched = [[i, image_fingerprint(dataset, i)] for i in ("img0", "img1")]
    assert policy.compute_key(None, {**inputs, "shard": touched}, {}) != key
    # labels recorded with their inputs; then img0 re-tagged: no key even for the shard as it was
    # (tags changed and changed back would otherwise find the old key cached with a stale label)
    with Manifest(tmp_path / MANIFEST) as manifest:
        for image_id in ("img0", "img1"):
            manifest.record(image_id, "ok", input=input_record(dataset, image_id))
    assert policy.compute_key(None, {**inputs, "shard": touched}, {}) is not None
    tags = {f"img{i}.png": dataset.tag_names(f"img{i}") for i in range(6)}
    write_folder_dataset_index(folder_dataset, dataset.classes, {**tags, "img0.png": ["bar"]})
    assert policy.compute_key(None, {**inputs, "shard": touched}, {}) is None


def test_label_folder_refuses_another_source(tmp_path):
    source = {"checkpoint_sha256": "abc", "cam": {"method": "getam"}, "refine": {}}
    assert claim_output_dir(tmp_path, source) is None
    assert claim_output_dir(tmp_path, dict(source)) is None
    other = {**source, "cam": {"method": "rollout"}}
    with pytest.raises(ValueError, match='other settings \\(cam.method: "getam" → "rollout"\\); finishing the folder'):
        claim_output_dir(tmp_path, other)
    assert "cam.method" in claim_output_dir(tmp_path, other, strict=False)
    assert json.loads((tmp_path / "source.json").read_text()) == other


def test_a_setting_added_since_the_folder_was_made_is_no_difference(tmp_path):
    """A newer wsss adds settings whose defaults keep the old behaviour: the folder is still
    finished, unless the new setting is set to something else. A part missing at the top
    level (older folders lack "data") is a difference."""
    old = {"checkpoint_sha256": "abc", "refine": {"pamr": {"iterations": 10}}}
    claim_output_dir(tmp_path, old)
    newer = {"checkpoint_sha256": "abc", "refine": {"pamr": {"iterations": 10}, "sam": SamConfig().model_dump(mode="json")}}
    assert source_differences(old, newer) == []
    assert claim_output_dir(tmp_path, newer) is None
    sam_on = {**newer, "refine": {**newer["refine"], "sam": {**newer["refine"]["sam"], "enabled": True}}}
    assert source_differences(old, sam_on) == ["refine.sam.enabled: null → true"]
    changed = {**newer, "refine": {**newer["refine"], "pamr": {"iterations": 5}}}
    assert source_differences(newer, changed) == ["refine.pamr.iterations: 10 → 5"]
    assert source_differences(old, {**old, "data": {"max_side": 1024}}) == ['data: null → {"max_side": 1024}']
    assert source_differences({"tokencut": {}}, {"tokencut": {"objects": 1}}) == ["tokencut.objects: null → 1"]


def test_reconcile_records_labels_found_on_disk(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"id": "a", "status": "ok", "reason": ""}\n'
                                             '{"id": "b", "status": "failed", "reason": "x"}\n{"id": "c", "sta')
    assert reconcile_manifest(tmp_path, {"a", "b", "d"}) == 2
    entries = read_manifest(tmp_path / "manifest.jsonl")
    assert {i: e["status"] for i, e in entries.items()} == {"a": "ok", "b": "ok", "d": "ok"}
    assert reconcile_manifest(tmp_path, {"a", "b", "d"}) == 0


def test_inbox_scan_sorts_ready_arriving_missing_untagged(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("old", "new", "loose"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"{name}.png")
    past = time.time() - 60
    os.utime(images / "old.png", (past, past))
    (tmp_path / "classes.txt").write_text("disk\n")
    (tmp_path / "tags.csv").write_text("image,tags\nold.png,disk\nnew.png,disk\ngone.png,disk\n")
    scan = scan_inbox(tmp_path, settle_seconds=5)
    assert (scan.ready, scan.arriving, scan.missing, scan.untagged) == (["old"], ["new"], ["gone"], ["loose"])
    (tmp_path / "tags.csv").unlink()
    scan = scan_inbox(tmp_path, settle_seconds=5)
    assert scan.dataset is None and scan.ready == [] and scan.untagged == ["loose", "new", "old"]


def test_report_checks():
    rows = [{"method": "getam", "+CRF": 60.0}, {"method": "rollout", "+CRF": 50.0},
            {"method": "trivial baseline", "+CRF": 40.0}]
    assert checks(rows, 65.0) == {"getam_beats_baselines": True, "getam_beats_trivial": True,
                                  "segmenter_beats_baselines_and_trivial": True}
    rows[1]["+CRF"] = 61.0
    assert checks(rows, 55.0) == {"getam_beats_baselines": False, "getam_beats_trivial": True,
                                  "segmenter_beats_baselines_and_trivial": False}
    assert checks([], None) == {"getam_beats_baselines": None, "getam_beats_trivial": None,
                                "segmenter_beats_baselines_and_trivial": None}


def test_flow_run_names_missing_and_unknown_parameters(capsys):
    from wsss.cli import main

    assert main(["flow", "run", "evaluate"]) == 2
    printed = capsys.readouterr()
    assert "flow evaluate: missing --param predictions=...; its parameters besides config: predictions" in printed.err
    assert "Prefect server" not in printed.out  # checked before a server is started
    assert main(["flow", "run", "pseudo-labels", "--param", "outdir=x"]) == 2
    assert "unknown parameter(s) outdir" in capsys.readouterr().err
    assert main(["flow", "run", "pipeline", "--set", "refine.pamr.iteratons=3"]) == 2  # same --set errors as every command
    assert "refine.pamr.iteratons: unknown key" in capsys.readouterr().err
