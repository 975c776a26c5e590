"""Training survives a lost process: under the real ``torchrun --nproc_per_node 2`` (CPU, gloo),
one rank SIGKILLed mid-run, torchrun's ``--max-restarts 1`` restarts both ranks, they resume from
RUN/segmenter/last.pt, and the final weights equal an uninterrupted run's bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from wsss.config import load_config
from wsss.data import open_dataset
from wsss.models.checkpoint import load_checkpoint

STEPS = 24  # phase 1: steps 1-6 (classification only), phase 2: 7-24 (GETAM labels, head dropout)
CHECKPOINT_EVERY = 4
KILL_AFTER = 8  # the first checkpoint in phase 2: the resumed run must restore the RNG streams too
DATA = ["data.synth.num_images=24", "data.synth.image_size=48", "data.val_split=null"]  # generated, no val score


def torchrun_command(run_dir: Path, data_root: Path) -> list[str]:
    """``torchrun --standalone --nproc_per_node 2 --max-restarts 1 -m wsss train segmenter`` of a
    tiny single-stage run (24 generated 48×48 images, a 2-block ViT, no validation score)."""
    overrides = [f"run_dir={run_dir}", f"data.root={data_root}", *DATA, "model.img_size=48", "model.patch_size=8",
                 "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "train.device=cpu",
                 f"train.segmenter.steps={STEPS}", "train.segmenter.phase1_fraction=0.25",
                 f"train.segmenter.checkpoint_every={CHECKPOINT_EVERY}",
                 "train.segmenter.batch_size=2", "train.segmenter.dpt.features=16", "train.segmenter.threads=1",
                 "refine.label.opening=3"]
    # --standalone: rendezvous on a free local port; --monitor-interval: notice a lost worker quickly
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "--max-restarts", "1", "--monitor-interval", "0.1",
            "-m", "wsss", "train", "segmenter", *[a for o in overrides for a in ("--set", o)]]


def start_torchrun(command: list[str], log: Path) -> subprocess.Popen:
    """torchrun with stdout and stderr to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop_torchrun(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and the workers it started (each in a session of its own: killing
    torchrun's process group would leave them running)."""
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    process.kill()
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def finish(process: subprocess.Popen, log: Path, timeout: float) -> str:
    """Wait for torchrun; its output. Fails the test (after stopping torchrun) on a timeout."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_torchrun(process)
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{log.read_text()[-4000:]}")
    return log.read_text()


def worker_of_rank(launcher: psutil.Process, rank: int) -> psutil.Process | None:
    """The training process of ``rank`` among torchrun's children (RANK in its environment)."""
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "wsss" in child.cmdline():
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def checkpoint_step(last: Path) -> int:
    """The step of the checkpoint at ``last`` (0 while there is none; it is replaced atomically)."""
    return load_checkpoint(last)["step"] if last.is_file() else 0


def kill_rank_after_checkpoint(process: subprocess.Popen, last: Path, step: int, rank: int, timeout: float) -> int:
    """Once ``last`` holds step ``step`` or later, SIGKILL the worker of ``rank``; returns its pid."""
    launcher = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while checkpoint_step(last) < step:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no checkpoint of step {step} in {last} while torchrun ran (exit code {process.poll()})")
        time.sleep(0.01)
    worker = worker_of_rank(launcher, rank)
    assert worker is not None, f"no worker of rank {rank} under torchrun {process.pid}"
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    return worker.pid


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "segmenter" / "segmenter.pt")["model"]


@pytest.mark.slow
def test_a_rank_killed_mid_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    open_dataset(load_config(None, [f"data.root={data}", *DATA]).data, "train")  # generated once, for both runs
    logs = {name: tmp_path / f"{name}.log" for name in ("straight", "killed")}
    # both at once: on 2 shared cores most of a run is its processes' start-up
    runs = {name: start_torchrun(torchrun_command(tmp_path / name, data), log) for name, log in logs.items()}
    try:
        pid = kill_rank_after_checkpoint(runs["killed"], tmp_path / "killed" / "segmenter" / "last.pt", KILL_AFTER,
                                         rank=1, timeout=240)
        outs = {name: finish(process, logs[name], timeout=300) for name, process in runs.items()}
    finally:
        for process in runs.values():
            if process.poll() is None:
                stop_torchrun(process)
    for name, process in runs.items():
        assert process.returncode == 0, f"{name}: {outs[name][-4000:]}"
    assert "resuming from" not in outs["straight"]
    out = outs["killed"]
    # torchrun saw the lost worker (exit code -9: SIGKILL) and restarted the group; it resumed mid-run
    assert f"failed (exitcode: -9) local_rank: 1 (pid: {pid})" in out, out[-4000:]
    resumed = [line for line in out.splitlines() if "resuming from" in line]
    assert len(resumed) == 1, out[-4000:]
    step = int(resumed[0].split("after step ")[1].split("/")[0])
    assert KILL_AFTER <= step < STEPS and step % CHECKPOINT_EVERY == 0, resumed[0]
    assert out.count("segmenter written to") == 1  # rank 0 of the restarted group only

    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ after the restart, e.g. {different[:4]}"
    steps = [[h["step"] for h in load_checkpoint(tmp_path / name / "segmenter" / "last.pt")["history"]]
             for name in ("straight", "killed")]
    assert steps[0] == steps[1]  # the killed run's history entries kept once
