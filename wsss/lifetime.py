"""Processes that end with the process that started them, and output folders one run at a time.

    exit_with(parent_pid)          in a child (e.g. a CRF pool worker): exit once the parent is
                                   gone, even when it was killed with SIGKILL
    with hold_folder(out): ...     refuse a second run on the same output folder while the first
                                   holds it (OUT/.wsss-lock with the owner's pid; a lock whose
                                   process is gone is taken over)
    python -m wsss.lifetime PID -- CMD ...   run CMD until it exits or process PID is gone
                                   (how wsss starts its temporary Prefect server)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["exit_with", "pid_alive", "hold_folder", "FolderBusyError", "LOCK_FILE", "run_watched"]

LOCK_FILE = ".wsss-lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def exit_with(parent_pid: int, interval: float = 1.0) -> None:
    """Start a daemon thread that ends this process (``os._exit``) once ``parent_pid`` is gone."""

    def watch() -> None:
        while pid_alive(parent_pid):
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name=f"exit-with-{parent_pid}", daemon=True).start()


class FolderBusyError(ValueError):
    """Another live process holds the output folder."""


@contextmanager
def hold_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` (created when missing) for this process while the block runs.

    Raises FolderBusyError naming the pid when another live process holds it; a lock left by a
    process that is gone (killed) is taken over. Re-entrant within one process. A folder it
    created that is still empty at the end is removed.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    mine = str(os.getpid())
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = lock.read_text(encoding="ascii").strip()
            except OSError:
                continue  # removed meanwhile: try again
            if owner == mine:
                yield folder  # held already by this process (an outer command): nothing to release
                return
            if owner.isdigit() and pid_alive(int(owner)):
                raise FolderBusyError(
                    f"{folder} is being written by process {owner} (lock {lock}); wait for it to finish, "
                    "or write to another folder") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(mine)
        try:
            yield folder
        finally:
            lock.unlink(missing_ok=True)
            if created and not any(folder.iterdir()):  # a command that wrote nothing leaves no folder
                folder.rmdir()
        return
    raise FolderBusyError(f"{folder}: could not take the lock {lock}")


def run_watched(parent_pid: int, command: list[str], interval: float = 1.0) -> int:
    """Run ``command`` as a child and end it (SIGTERM, then SIGKILL after 10 s) once
    ``parent_pid`` is gone; returns its exit status. ``python -m wsss.lifetime PID -- CMD...``
    runs this: a server started that way ends with the process that wanted it, even when that
    process is killed with SIGKILL."""
    import signal
    import subprocess

    child = subprocess.Popen(command)

    def forward(signum, _frame):  # a SIGTERM to this wrapper stops the child too
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while child.poll() is None:
        if not pid_alive(parent_pid):
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        time.sleep(interval)
    return child.wait()


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 4 or sys.argv[2] != "--" or not sys.argv[1].isdigit():
        sys.exit("usage: python -m wsss.lifetime PARENT_PID -- COMMAND [ARGS...]")
    sys.exit(run_watched(int(sys.argv[1]), sys.argv[3:]))
