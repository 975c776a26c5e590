"""Schedules for real: a `prefect server start` on a free loopback port, `python -m wsss flow serve`
serving label-inbox every few seconds, images dropped into the inbox and labelled by scheduled
runs; everything started here is stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_flows import add_to_inbox, flow_config
from wsss.config import config_to_yaml
from flows.prefect_server import LocalServer
from tests.runs import classifier_of

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the serving process exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group this test started, SIGKILL to what is left after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.mark.slow
def test_served_inbox_labels_new_images_on_schedule(tmp_path):
    inbox, out, home = tmp_path / "inbox", tmp_path / "out", tmp_path / "prefect_home"
    config = flow_config(tmp_path, f"flow.inbox.folder={inbox}", f"flow.inbox.out={out}",
                         "flow.inbox.settle_seconds=0.5", "flow.inbox.interval_seconds=10")
    classifier_of(config, progress=False)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_to_yaml(config))
    ids = (tmp_path / "data" / "splits" / "val.txt").read_text().split()
    labels = out / "labels"

    with LocalServer(port=free_port(), home=home, log=tmp_path / "server.log") as server:
        env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home),
               "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        with (tmp_path / "serve.log").open("wb") as log:
            serving = subprocess.Popen([sys.executable, "-m", "wsss", "flow", "serve", "--config", str(config_file)],
                                       cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            add_to_inbox(inbox, tmp_path / "data", ids[:2])
            wait_for(lambda: all((labels / f"{i}.png").is_file() for i in ids[:2]), "the first images", serving)
            stamps = {i: (labels / f"{i}.png").stat().st_mtime_ns for i in ids[:2]}
            add_to_inbox(inbox, tmp_path / "data", ids[2:3])
            wait_for(lambda: (labels / f"{ids[2]}.png").is_file(), "an image dropped later", serving)
            assert {i: (labels / f"{i}.png").stat().st_mtime_ns for i in ids[:2]} == stamps

            def completed_runs() -> list[dict]:
                runs = httpx.post(f"{server.api_url}/flow_runs/filter", timeout=30, json={
                    "flows": {"name": {"any_": ["label-inbox"]}}, "offset": 0, "limit": 200}).json()
                return [run for run in runs if run["state_type"] == "COMPLETED"]

            wait_for(lambda: len(completed_runs()) >= 2, "two completed runs", serving, timeout=60)
            assert all(run["deployment_id"] is not None for run in completed_runs())  # scheduled runs
        finally:
            stop_group(serving)
    assert not server.healthy()
