"""Processes that end with the process that started them, and output folders one run at a time.

    exit_with(parent_pid)          in a child (e.g. a CRF pool worker): exit once the parent is
                                   gone, even when it was killed with SIGKILL
    with hold_folder(out): ...     refuse a second run on the same output folder while the first
                                   holds it (OUT/.wsss-lock with the owner's pid; a lock whose
                                   process is gone is taken over)
    python -m wsss.lifetime PID -- CMD ...   run CMD until it exits or process PID is gone
                                   (how wsss starts its temporary Prefect server)
    stop_soon_after_interrupt()    in a command's main thread: Ctrl-C (SIGINT) ends the process
                                   within a few seconds even while a long torch operation runs
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["exit_with", "pid_alive", "hold_folder", "FolderBusyError", "LOCK_FILE", "run_watched",
           "stop_soon_after_interrupt", "INTERRUPTED", "DISK_FULL"]

INTERRUPTED = 130  # the exit status of a command ended by Ctrl-C (128 + SIGINT)
DISK_FULL = 3  # the exit status of a command stopped by a full disk (ENOSPC) or an exceeded quota (EDQUOT)

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


def exit_with(parent_pid: int, interval: float = 1.0, ignore_interrupt: bool = False) -> None:
    """Start a daemon thread that ends this process (``os._exit``) once ``parent_pid`` is gone.

    ignore_interrupt: ignore SIGINT here (a pool worker: Ctrl-C in a terminal reaches the whole
    process group, and the parent, which handles it, is the one to end its workers)."""
    if ignore_interrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

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
    from wsss.files import make_folder  # here: ``python -m wsss.lifetime`` stays free of numpy

    folder = Path(folder)
    created = not folder.exists()
    make_folder(folder)  # NotAFolderError (a ValueError) when it names a file
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


def stop_soon_after_interrupt(grace_s: float = 3.0) -> None:
    """Make Ctrl-C end this process within about ``grace_s`` seconds. Call it once, from the
    main thread of a command (the ``wsss`` entry point does).

    Python raises KeyboardInterrupt only between bytecodes, so a long torch operation (the
    backward pass over a large image, a CRF) can hold a Ctrl-C for minutes. Here the signal
    also wakes a watcher thread (``signal.set_wakeup_fd``): the main thread gets the usual
    KeyboardInterrupt (and cleans up) when it can; if it is still running ``grace_s`` seconds
    later the process exits with status 130 at once. Nothing finished is lost that way: every
    output is written atomically, the manifest line by line, a stale lock is taken over, and
    worker pools and temporary servers end with their parent (``exit_with``).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("stop_soon_after_interrupt: call it from the main thread")
    # multiprocessing's resource tracker (started later, with these options) would warn about the
    # semaphores of a pool that an exit at once leaves behind; it removes them all the same.
    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            received = os.read(read_end, 64)
            if not received or signal.SIGINT not in received:
                continue
            time.sleep(grace_s)
            sys.stderr.write(f"\ninterrupted: still busy {grace_s:g} s after Ctrl-C, stopped now; finished outputs are "
                             "kept, the same command finishes the rest\n")
            sys.stderr.flush()
            os._exit(INTERRUPTED)

    threading.Thread(target=watch, name="wsss-interrupt-watch", daemon=True).start()
