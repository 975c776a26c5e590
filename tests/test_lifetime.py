"""Processes end with their parent, and one run at a time holds an output folder (real
processes, real signals)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsss.cli import main
from wsss.lifetime import LOCK_FILE, FolderBusyError, hold_folder, pid_alive

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_held_folder_refuses_a_second_process_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from wsss.lifetime import hold_folder\n"
         "with hold_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(tmp_path / "out")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"being written by process {holder.pid}"):
            with hold_folder(tmp_path / "out"):
                pass
        holder.send_signal(signal.SIGKILL)  # killed: its lock stays behind, stale
        holder.wait()
        assert (tmp_path / "out" / LOCK_FILE).read_text() == str(holder.pid)
        with hold_folder(tmp_path / "out"):
            assert (tmp_path / "out" / LOCK_FILE).read_text() == str(os.getpid())
            with hold_folder(tmp_path / "out"):  # re-entrant in one process
                pass
            assert (tmp_path / "out" / LOCK_FILE).is_file()
        assert not (tmp_path / "out" / LOCK_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_command_on_a_folder_another_run_holds_is_an_error_line(tmp_path, folder_dataset, capsys):
    out = tmp_path / "labels"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(str(sleeper.pid))
        code = main(["pseudo-label", "--checkpoint", str(tmp_path / "missing.pt"), "--dataset", str(folder_dataset),
                     "--out", str(out)])  # the step holds the folder before it reads the checkpoint
        assert code == 2
        assert f"being written by process {sleeper.pid}" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    (out / LOCK_FILE).write_text(str(_dead_pid()))  # stale: the command goes on (and fails on its own input)
    assert main(["pseudo-label", "--checkpoint", str(tmp_path / "missing.pt"), "--dataset", str(folder_dataset),
                 "--out", str(out)]) == 2
    assert "being written" not in capsys.readouterr().err and not (out / LOCK_FILE).exists()


def test_crf_pool_workers_end_when_their_parent_is_killed(tmp_path):
    """A run killed with SIGKILL leaves no CRF worker behind (checked by pid)."""
    script = (
        "import json, os, sys, time\n"
        "from wsss.refine.crf import crf_pool\n"
        "from wsss.lifetime import pid_alive as probe\n"
        "if __name__ == '__main__':\n"
        "    pool = crf_pool(2)\n"
        "    list(pool.map(probe, [os.getpid()] * 4))\n"
        "    print(json.dumps(sorted(pool._processes)), flush=True)\n"
        "    time.sleep(120)\n"
    )
    path = tmp_path / "run_pool.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        workers = json.loads(parent.stdout.readline())
        assert len(workers) == 2 and all(pid_alive(p) for p in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(pid_alive(p) for p in workers), "CRF workers outlived their killed parent"
    finally:
        parent.kill()
        parent.wait()


def _group_members(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.slow
def test_the_temporary_prefect_server_ends_when_its_run_is_killed(tmp_path):
    """The server a command starts (``ensure_api_server``) runs under ``wsss.lifetime``: a SIGKILL
    of the command leaves no server process behind (checked by process group)."""
    script = (
        "import os, sys, time\n"
        "from flows.prefect_server import LocalServer, free_port\n"
        "with LocalServer(port=free_port(), home=sys.argv[1]) as server:\n"
        "    print(server.process.pid, flush=True)\n"
        "    time.sleep(300)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "home")], cwd=ROOT, stdout=subprocess.PIPE,
                           text=True)
    try:
        wrapper = int(run.stdout.readline())
        assert len(_group_members(wrapper)) >= 2  # the wrapper and the server it started
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 30
        while _group_members(wrapper) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group_members(wrapper), "the Prefect server outlived the killed run"
    finally:
        run.kill()
        run.wait()


def test_ctrl_c_ends_a_command_whose_main_thread_stays_busy(tmp_path):
    """``stop_soon_after_interrupt``: the main thread gets KeyboardInterrupt as usual; when it
    is still busy (here a clean-up that hangs, as a long torch operation does) the process
    exits with 130 a grace period later, and its CRF pool workers (which ignore SIGINT and end
    with it) leave nothing behind."""
    script = (
        "import os, signal, time\n"
        # as a command started from a terminal: a shell script's background job (CI started
        # with `&`) inherits SIGINT ignored, and Python then leaves it ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from wsss.lifetime import stop_soon_after_interrupt\n"
        "from wsss.refine.crf import crf_pool\n"
        "stop_soon_after_interrupt(grace_s=1.0)\n"
        "pool = crf_pool(2)\n"
        "pids = [pool.submit(os.getpid).result() for _ in range(4)]\n"
        "try:\n"  # the pids go out inside the try: a Ctrl-C right after them is still caught
        "    print(' '.join(map(str, set(pids))), flush=True)\n"
        "    time.sleep(120)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupt seen', flush=True)\n"
        "    time.sleep(120)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        workers = [int(pid) for pid in run.stdout.readline().split()]
        assert workers and all(pid_alive(pid) for pid in workers)
        started = time.monotonic()
        os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        assert run.wait(timeout=30) == 130
        assert time.monotonic() - started < 10
        assert run.stdout.read().strip() == "interrupt seen"
        errors = run.stderr.read()
        assert "interrupted: still busy 1 s after Ctrl-C" in errors
        assert "Traceback" not in errors and "leaked semaphore" not in errors  # workers print nothing
        deadline = time.monotonic() + 15
        while any(pid_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(pid_alive(pid) for pid in workers)
    finally:
        run.kill()
        run.wait()


def test_ctrl_c_in_a_command_is_an_interrupted_line_and_status_130(tmp_path, monkeypatch, capsys):
    import wsss.cli.data_commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(wsss.cli.data_commands, "cmd_config_show", interrupted)
    assert main(["config", "show"]) == 130
    assert "interrupted: finished outputs are kept" in capsys.readouterr().err
