"""Claims on the images of an output folder: one writer per image at a time, whoever writes
(threads, processes, Dask workers on other machines, two flow runs, ``wsss pseudo-label``).

    OUT/.claims/<holder token>.holder   who holds claims: JSON (run, worker, pid, host, since, ...);
                                        its modification time is the holder's heartbeat
    OUT/.claims/<key of id>.claim       one per claimed image: a hard link to its holder's file

    with ImageClaims(out, Claimant(run="flow run 'x'"), timeout_s=120) as claims:
        taken = claims.take(ids)         # taken.got: now ours; taken.busy: id → a live holder's record;
        ...label taken.got...            # taken.stale: id → the record of a holder that is gone
    # every claim released (also on an error); a SIGKILL leaves them, stale

A claim is made atomically and whole: ``os.link`` of the holder's file to the image's claim
name fails when the name exists (where a file system has no hard links: ``O_CREAT | O_EXCL``
and the record written into it). A claim is **stale**, and taken over, when its holder

- ran on this machine (same host name, boot id and pid namespace) and its process is gone (no
  such pid, or one started at another time: a reused pid), or
- ran on another machine and its heartbeat (the holder file's modification time, touched every
  ``timeout_s / 4`` seconds while it holds claims) is older than ``timeout_s``, measured
  against this holder's own heartbeat on the same file system (clocks of two machines need not
  agree).

Taking over renames the stale claim to a name of this holder's and checks that it moved the
very file it judged (same inode): a claim another holder took over meanwhile is put back, and
the image counts as busy. (Two takers of one stale claim cannot both win; a third one racing
them within the same microseconds is the case left open.)
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from wsss.lifetime import pid_alive

__all__ = ["CLAIMS", "Claimant", "ImageClaims", "Taken", "describe_holder", "live_claims"]

CLAIMS = ".claims"  # the folder of claims inside an output folder
_TAKE_TRIES = 3


@dataclass(frozen=True)
class Claimant:
    """Who claims, as every message naming a holder shows it.

    run: the run the claims belong to (e.g. "flow run 'abstract-turaco' (7252c185-...)",
    "wsss pseudo-label"); worker: where in the run (e.g. a Dask worker's address). The process,
    host and start time are added by ``ImageClaims``."""

    run: str | None = None
    worker: str | None = None


@dataclass
class Taken:
    """The outcome of ``ImageClaims.take(ids)``: ``got`` (ids now held, in the order given),
    ``busy`` (id → record of the live holder that has it) and ``stale`` (id → record of the
    holder that was gone; those ids are in ``got`` too: taken over)."""

    got: list[str] = field(default_factory=list)
    busy: dict[str, dict] = field(default_factory=dict)
    stale: dict[str, dict] = field(default_factory=dict)


def _machine() -> str:
    """What makes two processes' pids comparable: this machine's boot id and this process's pid
    namespace (Linux; "" where there are none): containers that share a host name but not their
    pids do not judge each other's claims by pid."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip())
    except OSError:
        pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return " ".join(parts)


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _claim_name(image_id: str) -> str:
    """The file name of ``image_id``'s claim: a digest (ids may be long or hold any character)."""
    return hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:24] + ".claim"


def describe_holder(record: dict) -> str:
    """A holder's record as one phrase: "flow run 'x' (...), worker tcp://..., process 123 on
    host h since 17:22:54" (the parts it has)."""
    parts = [record[key] for key in ("run",) if record.get(key)]
    if record.get("worker"):
        parts.append(f"worker {record['worker']}")
    where = f"process {record.get('pid', '?')} on host {record.get('host', '?')}"
    if record.get("since"):
        where += f" since {time.strftime('%H:%M:%S', time.localtime(record['since']))}"
    return ", ".join([*parts, where])


class ImageClaims:
    """The claims of one holder on images of ``out_dir`` (a context manager: it writes the holder
    file and keeps its heartbeat while it is open, and releases every claim when it closes).

    claimant: who claims (``Claimant``); timeout_s: how long a holder on another machine counts
    as alive without a heartbeat (this holder touches its own every ``timeout_s / 4`` s)."""

    def __init__(self, out_dir: str | os.PathLike, claimant: Claimant = Claimant(), timeout_s: float = 120.0):
        if not timeout_s > 0:
            raise ValueError(f"claim timeout_s={timeout_s}: expected a positive number of seconds")
        self.folder = Path(out_dir) / CLAIMS
        self.timeout_s = timeout_s
        self.token = uuid.uuid4().hex
        self.record = {"token": self.token, "run": claimant.run, "worker": claimant.worker, "pid": os.getpid(),
                       "pid_start": _process_start(os.getpid()), "host": socket.gethostname(), "machine": _machine(),
                       "since": time.time()}
        self.holder = self.folder / f"{self.token}.holder"
        self._held: dict[str, Path] = {}  # id → its claim file
        self._links = True  # False: this file system has no hard links (claims are written files)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> "ImageClaims":
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f".{self.token}.tmp"
        temporary.write_text(json.dumps(self.record), encoding="utf-8")
        os.replace(temporary, self.holder)
        self._beat = threading.Thread(target=self._heartbeat, name=f"claims-{self.token[:8]}", daemon=True)
        self._beat.start()
        self._sweep()
        return self

    def _sweep(self) -> None:
        """Remove the holder files of holders that are gone and hold no claim (one killed between
        opening its claims and taking any, or after releasing them); a gone holder's claims are
        taken over one by one, and its file with the first."""
        for path in self.folder.glob("*.holder"):
            try:
                status = os.stat(path)
            except FileNotFoundError:
                continue
            if path != self.holder and status.st_nlink == 1 and not self.alive(_read_record(path), status.st_mtime):
                path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.release(list(self._held))
        self.holder.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            self._touch()

    def _touch(self) -> None:
        """Mark this holder alive now (its claims share the holder file's inode; written claims
        are touched one by one)."""
        for path in (self.holder,) if self._links else (self.holder, *tuple(self._held.values())):
            try:
                os.utime(path)
            except FileNotFoundError:
                pass

    # --- taking and releasing ---------------------------------------------------------------
    def take(self, ids: list[str]) -> Taken:
        """Claim each of ``ids`` that no live holder has (taking over stale claims)."""
        taken = Taken()
        for image_id in ids:
            if image_id in self._held:
                taken.got.append(image_id)
                continue
            holder, stale = self._take_one(image_id)
            if holder is None:
                taken.got.append(image_id)
                if stale is not None:
                    taken.stale[image_id] = stale
            else:
                taken.busy[image_id] = holder
        return taken

    def release(self, ids: list[str]) -> None:
        """Give up the claims on ``ids`` (those this holder has)."""
        for image_id in ids:
            path = self._held.pop(image_id, None)
            if path is not None:
                path.unlink(missing_ok=True)

    def _take_one(self, image_id: str) -> tuple[dict | None, dict | None]:
        """Claim one image: (None, None) when made, (None, the stale record) when taken over,
        (the live holder's record, None) when busy."""
        path = self.folder / _claim_name(image_id)
        stale = None
        for _ in range(_TAKE_TRIES):
            if self._create(path):
                self._held[image_id] = path
                return None, stale
            try:
                status = os.stat(path)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            record = _read_record(path)
            if not record and not path.exists():
                continue  # released meanwhile: try again
            if self.alive(record, status.st_mtime):
                return record, None
            if self._remove_stale(path, status.st_ino):
                stale = record
                if record.get("token"):  # its holder file too (claims it still has keep their links)
                    (self.folder / f"{record['token']}.holder").unlink(missing_ok=True)
        return _read_record(path) or {"run": "another holder (its claim changing hands)"}, None

    def _create(self, path: Path) -> bool:
        """Make ``path`` this holder's claim, atomically and whole; False when it exists."""
        if self._links:
            try:
                os.link(self.holder, path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some network or FUSE file systems): written claims
                self._links = False
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.record))
        return True

    def _remove_stale(self, path: Path, inode: int) -> bool:
        """Move the stale claim at ``path`` (the file ``inode``) out of the way; True when this
        holder moved that very file, False when another taker was first (its claim put back)."""
        aside = self.folder / f".{self.token}.{path.name}.stale"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if os.stat(aside).st_ino != inode:  # another taker's fresh claim: put it back
            try:
                os.link(aside, path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    # --- liveness ---------------------------------------------------------------------------
    def alive(self, record: dict, heartbeat: float) -> bool:
        """Whether the holder of ``record`` (whose claim was last touched at ``heartbeat``, a
        modification time of this file system) still counts as holding its claims."""
        if record.get("token") == self.token:
            return True
        if record.get("host") == self.record["host"] and record.get("machine") == self.record["machine"] \
                and isinstance(record.get("pid"), int):
            pid = record["pid"]
            return pid_alive(pid) and (record.get("pid_start") is None
                                       or _process_start(pid) in (None, record["pid_start"]))
        self._touch()
        try:
            now = os.stat(self.holder).st_mtime
        except FileNotFoundError:
            now = time.time()
        return now - heartbeat < self.timeout_s


def _read_record(path: Path) -> dict:
    """The holder record a claim holds ({} while a written claim is still empty or unreadable,
    then only its heartbeat decides; {} too when it was released meanwhile)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def live_claims(out_dir: str | os.PathLike, ids: list[str], checker: ImageClaims) -> dict[str, dict]:
    """Of ``ids``, those a live holder other than ``checker`` claims in ``out_dir``: id → record."""
    folder = Path(out_dir) / CLAIMS
    if not folder.is_dir():
        return {}
    found = {}
    for image_id in ids:
        path = folder / _claim_name(image_id)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            continue
        record = _read_record(path)
        if (record or path.exists()) and record.get("token") != checker.token and checker.alive(record, status.st_mtime):
            found[image_id] = record
    return found
