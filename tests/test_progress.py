"""Progress where Prefect users look: the rate / time-left lines of ``wsss.progress``, the
training, labelling and inbox flows' progress artifacts and log lines against a temporary
Prefect server, and model creation without warnings."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

from tests.test_flows import add_to_inbox, api_read, flow_config, latest_artifact
from wsss.config import load_config
from flows.progress_artifacts import shard_line
from wsss.progress import RateMeter, format_duration, format_rate, percent, progress_line

TRAIN_IDS = 16


# --- formatting and the meter ------------------------------------------------------------
def test_durations_and_rates_read_as_people_write_them():
    assert [format_duration(s) for s in (0, 42, 59.6, 185, 3599, 7500, None)] == [
        "0 s", "42 s", "1 min 00 s", "3 min 05 s", "59 min 59 s", "2 h 05 min", "?"]
    assert format_duration(float("nan")) == "?" and format_duration(-3) == "0 s"
    assert [format_rate(r, "img") for r in (None, 0.0, 0.3519, 2.857, 16.24, 123.4)] == [
        "? img/s", "0.000 img/s", "0.352 img/s", "2.86 img/s", "16.2 img/s", "123 img/s"]
    assert (percent(3, 12), percent(0, 0), percent(13, 12)) == (25.0, 100.0, 100.0)


def test_meter_counts_only_this_runs_units_and_the_line_drops_the_time_left_at_the_end():
    now = [100.0]
    meter = RateMeter(total=10, start=2, clock=lambda: now[0])  # resumed after 2 units
    assert meter.read(2) == (None, None)  # nothing done in this run yet: unknown
    now[0] = 104.0
    assert meter.read(6) == (1.0, 4.0)  # 4 units in 4 s; 4 left
    now[0] = 108.0
    assert meter.read(10) == (1.0, 0.0) and meter.elapsed() == 8.0
    assert progress_line("step", 250, 2000, ["phase 2", "loss 0.4321"], ["2.86 steps/s", "22.9 img/s"], 612) == (
        "step 250/2000 (12 %)  phase 2  loss 0.4321  2.86 steps/s  22.9 img/s  10 min 12 s left")
    assert progress_line("epoch", 14, 14, ["loss 0.1"], ["9.00 img/s"], 0.0) == "epoch 14/14 (100 %)  loss 0.1  9.00 img/s"
    assert progress_line("epoch", 1, 14, seconds_left=None) == "epoch 1/14 (7 %)  ? left"
    assert shard_line("pseudo-labels", 3, 8, 96, 256, {"ok": 90, "failed": 1, "skipped": 5}, 2.41, 66) == (
        "pseudo-labels: shard 3/8, 96/256 images (38 %)  ok 90  failed 1  skipped 5  2.41 img/s  1 min 06 s left")


def test_library_training_prints_its_lines_without_a_callback(tmp_path, capsys):
    """No Prefect: the classifier prints one line per epoch with the rate and time left, and a
    callback given instead receives them (done, total, stats) and nothing is printed."""
    from tests.runs import classifier_of

    config = flow_config(tmp_path, "train.classifier.epochs=2")
    classifier_of(config, progress=False)
    out = capsys.readouterr().out
    assert "epoch 1/2 (50 %)  loss " in out and " img/s  " in out and " left" in out and "epoch 2/2 (100 %)" in out
    calls = []
    classifier_of(config, progress=False, on_progress=lambda done, total, stats: calls.append((done, total, stats)))
    assert [(d, t) for d, t, _ in calls] == [(2, 2)] and calls[0][2]["resumed"]  # resumed after the last epoch
    assert "resuming from" in calls[0][2]["line"] and "resuming from" not in capsys.readouterr().out


# --- warnings of model creation ----------------------------------------------------------
def test_the_demo_model_warns_nothing_and_other_warnings_still_show():
    """Creating and running the demo's classifier and segmenter emits no warning under the
    filters in force (project filters first, then everything shown), while an unrelated
    warning raised in the same context still shows: nothing is silenced broadly."""
    from wsss.models.classifier import create_classifier
    from wsss.models.segmentation_model import create_segmenter

    config = load_config("configs/demo.yaml", [])
    settings = config.train.segmenter
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", append=True)  # after any filter the project installed
        model = create_classifier(config.model, 6)
        model(torch.zeros(2, 3, 128, 128)).sum().backward()
        segmenter = create_segmenter(config.model, settings.head, settings.head_config, 6)
        segmenter(torch.zeros(1, 3, 128, 128)).seg.sum().backward()
        model_warnings = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
        warnings.warn("an unrelated warning", UserWarning)
        warnings.warn("a deprecation elsewhere", DeprecationWarning)
    assert model_warnings == []
    assert [str(w.message) for w in caught] == ["an unrelated warning", "a deprecation elsewhere"]


# --- the flows against a temporary Prefect server ----------------------------------------
def run_logs(state, *wanted: str, timeout: float = 60.0) -> list[str]:
    """The log messages of the flow run that ended in ``state`` (its tasks' included), read
    back from the API once every ``wanted`` text is in one of them (logs arrive in batches)."""
    flow_run_id = str(state.state_details.flow_run_id)
    deadline = time.monotonic() + timeout
    while True:
        logs = api_read("logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC",
                                        "limit": 200})
        messages = [entry["message"] for entry in logs]
        if all(any(text in m for m in messages) for text in wanted) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def assert_artifact_done(key: str, state) -> None:
    artifact = latest_artifact(key)
    assert artifact["type"] == "progress" and artifact["data"] == 100.0
    assert artifact["flow_run_id"] == str(state.state_details.flow_run_id)


def lines_with(messages: list[str], start: str) -> list[str]:
    return [m for m in messages if m.startswith(start)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_api):
    tmp = tmp_path_factory.mktemp("progress")
    return tmp, flow_config(tmp, "train.classifier.epochs=2", "train.segmenter.log_every=2",
                            "train.segmenter.checkpoint_every=4")


def test_training_flows_keep_their_artifact_current_and_log_rates_and_time_left(runs):
    from flows.training import train_classifier, train_segmenter

    tmp, config = runs
    state = train_classifier(config, return_state=True)
    assert state.is_completed()
    assert_artifact_done("classifier-training-progress", state)
    messages = run_logs(state, "epoch 2/2 (100 %)")
    first, last = lines_with(messages, "epoch 1/2 (50 %)  loss "), lines_with(messages, "epoch 2/2 (100 %)  loss ")
    assert len(first) == 1 and len(last) == 1, messages
    assert " val mAP " in first[0] and " img/s  " in first[0] and first[0].endswith(" left")
    assert " img/s" in last[0] and " left" not in last[0]

    again = train_classifier(config, return_state=True)  # finished: resumes after the last epoch
    assert_artifact_done("classifier-training-progress", again)
    assert lines_with(run_logs(again, "resuming from"), "resuming from")

    state = train_segmenter(config, return_state=True)
    assert state.is_completed()
    assert_artifact_done("segmenter-training-progress", state)
    messages = run_logs(state, "step 4/4 (100 %)")
    steps = [m for m in messages if m.startswith("step ") and "%)" in m]
    assert [m.split(" (")[0] for m in steps] == ["step 2/4", "step 4/4"], messages  # every log_every = 2 steps
    assert " loss " in steps[0] and " steps/s  " in steps[0] and " img/s  " in steps[0] and steps[0].endswith(" left")
    assert any(m.startswith("step      4  phase") for m in messages)  # the checkpoint line is still there


def test_labelling_and_inbox_flows_log_a_line_per_shard(runs):
    from flows.label_inbox import label_inbox
    from flows.pseudo_labels import pseudo_labels
    from flows.training import train_classifier, train_segmenter

    tmp, config = runs
    checkpoint, segmenter = train_classifier(config), train_segmenter(config)  # done by the test above, or now
    state = pseudo_labels(config, checkpoint=checkpoint, out_dir=tmp / "labels", return_state=True)
    assert state.is_completed()
    messages = run_logs(state, f"shard 4/4, {TRAIN_IDS}/{TRAIN_IDS} images (100 %)")
    shards = lines_with(messages, "pseudo-labels: shard ")
    assert [m.split(",")[0] for m in shards] == [f"pseudo-labels: shard {n}/4" for n in (1, 2, 3, 4)], messages
    assert "4/16 images (25 %)  ok 4  failed 0  skipped 0  " in shards[0] and shards[0].endswith(" left")
    assert f"ok {TRAIN_IDS}  failed 0  skipped 0  " in shards[-1] and " img/s" in shards[-1]
    assert_artifact_done("pseudo-labels-progress", state)

    inbox = tmp / "inbox"
    settings = config.model_copy(update={"flow": config.flow.model_copy(update={"inbox": config.flow.inbox.model_copy(
        update={"folder": inbox, "out": tmp / "inbox_out", "classifier": checkpoint, "segmenter": segmenter,
                "settle_seconds": 0.0})})})
    ids = (tmp / "data" / "splits" / "val.txt").read_text().split()
    add_to_inbox(inbox, tmp / "data", ids[:4] + (tmp / "data" / "splits" / "train.txt").read_text().split()[:1])
    state = label_inbox(settings, return_state=True)
    assert state.is_completed() and state.result()["predicted"] == 5
    messages = run_logs(state, "predictions: 5/5 images (100 %)")
    assert "labelling 5 new image(s) in 2 shard(s) of up to 4" in messages, messages
    predicted = lines_with(messages, "predictions: ")
    assert [m.split(" (")[0] for m in predicted] == ["predictions: 4/5 images", "predictions: 5/5 images"]
    assert "ok 4  failed 0  skipped 0  " in predicted[0] and predicted[0].endswith(" left")
    assert_artifact_done("inbox-predictions-progress", state)
