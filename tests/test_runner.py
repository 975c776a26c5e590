"""The data set walk with deferred batches (``wsss.data.dataset_walk.Deferred``): the next batch is
computed before the walk waits for the last one, batches are written in order, a batch whose
deferred part fails is retried one image at a time; and pseudo-labels whose CRF overlaps the
next batch's maps (``refine.crf.overlap``) equal those made one batch at a time."""

import json

import numpy as np
import pytest

from wsss.data.label_png import read_label_png
from wsss.data.dataset_walk import Deferred, Walk, WalkFiles, run_dataset
from tests.test_batching import mixed_sizes


def test_the_next_batch_is_computed_before_the_last_one_is_waited_for(tmp_path):
    dataset = mixed_sizes(tmp_path / "mixed")  # 11 readable images in 3 sizes and one broken file
    events = []

    def compute(batch):
        ids = [sample.id for sample in batch]
        events.append(("compute", ids))

        def finish():
            events.append(("finish", ids))
            if "im04" in ids and len(ids) > 1:
                raise ValueError("a worker failed on this batch")
            if ids == ["im04"]:
                raise RuntimeError("im04 alone fails too")
            return [f"result of {i}" for i in ids]

        return Deferred(finish)

    written = []

    def write(sample, result):
        assert result == f"result of {sample.id}"
        written.append(sample.id)

    counts = run_dataset(dataset, compute, write, Walk(batch_size=3, progress=False), WalkFiles(tmp_path / "out"))
    assert counts == {"ok": 10, "skipped": 0, "failed": 2}  # broken.png, and im04 alone
    computed = [ids for kind, ids in events if kind == "compute"]
    failing = next(ids for ids in computed if "im04" in ids)  # the batch that holds im04
    retries = [[i] for i in failing]
    first_pass = [ids for ids in computed if ids not in retries]
    # overlap: batch k+1 is computed before batch k is finished, for every batch but the last
    for k in range(len(first_pass) - 1):
        if "im04" in first_pass[k]:
            continue  # its retries come in between
        assert events.index(("compute", first_pass[k + 1])) < events.index(("finish", first_pass[k]))
    # the batch holding im04 was retried one image at a time; the others of it were written
    assert len(failing) > 1 and all(("compute", ids) in events for ids in retries)
    assert events.index(("finish", failing)) < min(events.index(("compute", ids)) for ids in retries)
    assert sorted(written) == sorted(i for i in dataset.ids if i not in ("im04", "broken"))
    # batches are written in the order they were computed
    order = [i for ids in first_pass for i in ids if i != "im04"]
    assert written == order
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    reasons = {entry["id"]: entry["reason"] for entry in manifest if entry["status"] == "failed"}
    assert set(reasons) == {"broken", "im04"} and "im04 alone fails too" in reasons["im04"]


@pytest.mark.parametrize("setting", ["refine.crf.overlap=false", "refine.crf.workers=1"])
def test_labels_with_the_crf_overlapping_equal_labels_made_one_batch_at_a_time(tmp_path, setting):
    from tests.runs import classifier_of
    from tests.test_classifier import tiny_config
    from wsss.cli import main

    dataset = mixed_sizes(tmp_path / "mixed", broken=False)
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    outs = {}
    for name, extra in (("overlap", "refine.crf.overlap=true"), ("plain", setting), ("no CRF", "refine.crf.enabled=false")):
        outs[name] = tmp_path / name.replace(" ", "_")
        assert main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(dataset.root), "--out",
                     str(outs[name]), "--set", "cam.batch_size=3", "--set", "refine.saliency.source=none",
                     "--set", "refine.crf.enabled=true", "--set", "refine.crf.workers=2", "--set", extra]) == 0
    moved_by_the_crf = 0
    for image_id in dataset.ids:
        a, b, c = (read_label_png(outs[name] / f"{image_id}.png") for name in ("overlap", "plain", "no CRF"))
        assert np.array_equal(a, b), image_id
        moved_by_the_crf += int((a != c).sum())
    assert moved_by_the_crf > 0  # the CRF ran and changed labels, so the equality above says something
