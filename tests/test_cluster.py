"""Labelling with many hands, with the real programs: the README's Dask cluster (``dask
scheduler``, two ``dask worker`` processes, ``wsss flow run pseudo-labels`` against the
scheduler) losing a worker to SIGKILL while it holds a shard, and two ``wsss flow run`` processes
started at once on one output folder.

Both check what a user relies on: the run completes, every image is in the manifest exactly
once, the label PNGs are byte-equal to a single-process run's, and the log names what happened
(the lost worker and the shard redone; the other run). One temporary Prefect server serves the
module (the ``wsss`` processes get its PREFECT_API_URL); a tiny random ViT on 60 generated
48×48 images (48 in the training split).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.prefect_server import free_port
from flows.pseudo_labels import pseudo_labels
from tests.runs import classifier_of
from tests.test_flows import flow_config
from wsss.config import config_to_yaml
from wsss.steps.image_claims import CLAIMS

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cluster set-up: tests/test_cluster.py runs these lines -->"
TRAIN_IDS = 48  # of 60 images, val_fraction 0.2


def cluster_block(path: Path) -> str:
    """The bash block after MARKER in ``path`` (the README, docs/flows.md)."""
    text = path.read_text(encoding="utf-8")
    assert MARKER in text, f"{path}: no cluster set-up block (marker {MARKER})"
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block


def cluster_commands(port: int, config: Path, out: Path) -> list[list[str]]:
    """The README's cluster lines as argv lists: the scheduler, each worker, the flow run; its
    port 8786 → ``port``, configs/demo.yaml → ``config``, runs/cluster_labels → ``out``, and
    .venv/bin/PROGRAM → this interpreter's PROGRAM (the same virtual environment)."""
    commands = []
    for line in cluster_block(ROOT / "README.md").splitlines():
        words = [word for word in shlex.split(line, comments=True) if word != "&"]
        if not words:
            continue
        words = [re.sub(r"\b8786\b", str(port), word).replace("configs/demo.yaml", str(config))
                 .replace("runs/cluster_labels", str(out)) for word in words]
        if words[0].startswith(".venv/bin/"):
            words[0] = str(Path(sys.executable).parent / words[0].removeprefix(".venv/bin/"))
        commands.append(words)
    return commands


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, prefect_api):
    """(folder, config file, the training ids, reference labels: PNG name → bytes, by the
    thread runner in this process)."""
    tmp = tmp_path_factory.mktemp("cluster")
    config = flow_config(tmp, "data.synth.num_images=60", "flow.examples=0", "flow.retry_delay_seconds=0")
    classifier_of(config, progress=False)  # RUN/classifier/classifier.pt: the flow's default checkpoint
    summary = pseudo_labels(config, out_dir=tmp / "reference")
    assert summary["ok"] == TRAIN_IDS
    (tmp / "config.yaml").write_text(config_to_yaml(config))
    ids = (tmp / "data" / "splits" / "train.txt").read_text().split()
    reference = {p.name: p.read_bytes() for p in (tmp / "reference").glob("[!.]*.png")}
    return tmp, tmp / "config.yaml", ids, reference


def environment(tmp: Path, prefect_api: str) -> dict:
    """The processes' environment: this module's Prefect server, a Prefect home of their own."""
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp / "prefect_home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``process`` and its process group: SIGTERM, then SIGKILL after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            os.killpg(process.pid, 0)  # the group outlives its leader (a nanny's worker): go on
        except (subprocess.TimeoutExpired, ProcessLookupError):
            continue
    process.wait()


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert process.poll() is None, f"{process.args[:2]} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"nothing answers on port {port}"
            time.sleep(0.2)


@contextmanager
def dask_cluster(commands: list[list[str]], port: int, env: dict, logs: Path):
    """Start the scheduler (``commands[0]``) and the workers (the rest), each in its own process
    group; yield a distributed Client once every worker is registered; stop them all at the
    end, whatever happened."""
    from distributed import Client

    processes, client = [], None
    try:
        for number, argv in enumerate(commands):
            with (logs / f"dask-{number}.log").open("w") as log:
                processes.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            if number == 0:
                wait_for_port(port, processes[0])
        client = Client(f"tcp://127.0.0.1:{port}", timeout=60, set_as_default=False)  # else prefect-dask uses it
        client.wait_for_workers(len(commands) - 1, timeout=180)
        yield client
    finally:
        if client is not None:
            client.close()
        for process in reversed(processes):
            stop_group(process)


def kill_a_worker_holding_a_shard(out: Path, workers: dict[str, int], process: subprocess.Popen,
                                  timeout: float = 240.0) -> dict:
    """Watch OUT/.claims until one of ``workers`` (address → pid) holds claims on a shard's
    images (its holder file has links: its claims), SIGKILL that worker's process at once;
    returns its holder record."""
    deadline = time.monotonic() + timeout
    while True:
        for holder in (out / CLAIMS).glob("*.holder"):
            try:
                record = json.loads(holder.read_text(encoding="utf-8"))
                claims = holder.stat().st_nlink - 1
            except (OSError, json.JSONDecodeError):
                continue
            if record.get("worker") in workers and claims > 0:
                os.kill(workers[record["worker"]], signal.SIGKILL)
                return {**record, "file": holder}
        assert process.poll() is None, "the flow run ended before a worker held a shard"
        assert time.monotonic() < deadline, "no worker held a shard in time"
        time.sleep(0.01)


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def summary_of(output: str) -> dict:
    """The summary dict ``wsss flow run`` prints last."""
    line = next(line for line in reversed(output.splitlines()) if line.startswith("{'out_dir'"))
    return ast.literal_eval(line)


def test_the_readme_lines_are_the_docs_lines():
    assert cluster_block(ROOT / "README.md") == cluster_block(ROOT / "docs" / "flows.md")


@pytest.mark.slow
def test_a_worker_killed_while_it_holds_a_shard_loses_and_repeats_nothing(tiny, prefect_api, tmp_path):
    tmp, config_file, ids, reference = tiny
    port, out = free_port(), tmp_path / "labels"
    *cluster, flow_run = cluster_commands(port, config_file, out)
    assert [argv[1] for argv in cluster] == ["scheduler", "worker", "worker"] and "--nthreads" in cluster[1]
    env = environment(tmp_path, prefect_api)
    with dask_cluster(cluster, port, env, tmp_path) as client:
        workers = client.run(os.getpid)  # address → pid of each worker process
        warm = [client.submit(importlib.import_module, "flows.pseudo_labels", workers=[address], pure=False)
                for address in workers]  # their imports while the flow run starts (one after the other: 70 s)
        with (tmp_path / "flow.log").open("w") as log:
            run = subprocess.Popen(flow_run, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            victim = kill_a_worker_holding_a_shard(out, workers, run)
            assert victim["file"].exists()  # killed while it held claims: they are left behind, stale
            assert run.wait(timeout=240) == 0, (tmp_path / "flow.log").read_text()[-3000:]
        finally:
            stop_group(run)
            del warm
    output = (tmp_path / "flow.log").read_text()

    lines = manifest_lines(out)  # exactly once each, as written
    assert Counter(entry["id"] for entry in lines) == Counter(ids)
    assert all(entry["status"] == "ok" for entry in lines)
    labels = {p.name: p.read_bytes() for p in out.glob("[!.]*.png")}
    assert labels == reference  # byte-equal to the single-process run
    assert not list(out.glob(".*.png")) and not list((out / CLAIMS).iterdir())  # nothing half-written or held

    lost = f"worker {victim['worker']} (process {victim['pid']} on host {socket.gethostname()}) lost while it held"
    assert lost in output, output[-3000:]
    shard = re.search(re.escape(lost) + r" \d+ image\(s\) of (shard \d+ \(ids \S+\.\.\S+\))", output).group(1)
    assert re.search(re.escape(f"; {shard} redone on tcp://127.0.0.1:") + r"\d+", output)
    assert re.search(rf"Dask scheduler: worker {re.escape(victim['worker'])} was lost while it had [^\n]*"
                     + re.escape(shard), output), output[-3000:]
    assert "Finished in state Completed" in output and summary_of(output)["ok"] == TRAIN_IDS


@pytest.mark.slow
def test_two_runs_started_at_once_on_one_folder_share_it(tiny, prefect_api, tmp_path):
    tmp, config_file, ids, reference = tiny
    out = tmp_path / "labels"
    command = [sys.executable, "-m", "wsss", "flow", "run", "pseudo-labels", "--config", str(config_file),
               "--param", f"out_dir={out}", "--set", "flow.shard_size=1", "--set", "flow.max_workers=1"]
    env = environment(tmp_path, prefect_api)
    logs = [tmp_path / "run1.log", tmp_path / "run2.log"]
    runs = []
    try:
        for log in logs:
            with log.open("w") as handle:
                runs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                             start_new_session=True))
        codes = [run.wait(timeout=300) for run in runs]
    finally:
        for run in runs:
            stop_group(run)
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], [output[-2000:] for output in outputs]

    lines = manifest_lines(out)  # no image written or recorded twice
    assert Counter(entry["id"] for entry in lines) == Counter(ids) and all(e["status"] == "ok" for e in lines)
    assert {p.name: p.read_bytes() for p in out.glob("[!.]*.png")} == reference
    assert not list(out.glob(".*.png")) and not list((out / CLAIMS).iterdir())

    summaries = [{key: summary_of(output)[key] for key in ("ok", "by_other_runs", "skipped", "failed")}
                 for output in outputs]
    for summary in summaries:  # each run accounts for every image: its own, the other's, none twice
        assert sum(summary.values()) == TRAIN_IDS, summaries
    assert sum(s["ok"] for s in summaries) == TRAIN_IDS, summaries  # each image written once
    starts = [re.search(r"(\S+) \| INFO +\| Flow run '([^']+)' - Beginning", output).groups() for output in outputs]
    assert min(s["ok"] for s in summaries) > 0, (summaries, starts)  # both labelled: they shared the folder
    assert any(f"flow run '{starts[1 - i][1]}'" in outputs[i] for i in range(2)), "neither run named the other"


def test_a_default_dask_client_of_another_cluster_is_refused():
    """prefect-dask would send the shards to this process's default client's cluster, whatever
    flow.dask_address says (it did, in the first version of benchmarks/bench_cluster.py)."""
    from distributed import Client, LocalCluster

    from flows.task_runners import make_task_runner
    from wsss.config import FlowConfig

    elsewhere = FlowConfig(task_runner="dask", dask_address="tcp://127.0.0.1:9")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as local, Client(local):
        with pytest.raises(ValueError, match="flow.dask_address=tcp://127.0.0.1:9, but this process has a default "
                                             f"Dask client connected to {re.escape(local.scheduler_address)}"):
            make_task_runner(elsewhere)
        make_task_runner(elsewhere.model_copy(update={"dask_address": local.scheduler_address}))
    make_task_runner(elsewhere)  # no default client: the address is used
