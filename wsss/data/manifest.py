"""The record of a walk's outcomes: OUT/manifest.jsonl, one JSON object a line.

    {"id": "2007_000032", "status": "ok", "reason": "", "input": {...}, "confidence": {...}}
    {"id": "broken", "status": "failed", "reason": "ImageReadError: ..."}

Appended to, never rewritten; the latest line of an id is its current outcome (``read_manifest``).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["MANIFEST", "Manifest", "read_manifest"]

MANIFEST = "manifest.jsonl"


class Manifest:
    """An append-only JSON-lines record of every image's outcome: {"id", "status", "reason"}.

    status is "ok" or "failed"; each line is flushed at once, so an interruption loses nothing
    that was recorded. A last line cut off by a hard stop mid-write (no final newline) is ended
    when the file is opened, so the next record starts a line of its own instead of merging
    into it (the cut line stays, unreadable, and readers skip it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        if self._handle.tell() and not _ends_with_newline(self.path):
            self._handle.write("\n")
            self._handle.flush()

    def recorded_ids(self) -> set[str]:
        """The ids the file records so far (a line cut by a hard stop is skipped)."""
        return set(read_manifest(self.path))

    def record(self, image_id: str, status: str, reason: str = "", **extra) -> None:
        try:
            self._handle.write(json.dumps({"id": image_id, "status": status, "reason": reason, **extra}) + "\n")
            self._handle.flush()
        except OSError as error:  # e.g. a full disk: the error names this file
            raise OSError(error.errno, error.strerror, str(self.path)) from error

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """The latest entry of every id in a manifest (lines that are not JSON objects, and a last
    line not yet ended, are skipped).

    The entries read are kept per file in this process: a later call reads only the lines
    appended since (a shard of a million-image folder does not re-read the whole file), and the
    whole file again when it was replaced or shortened."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    key = str(path.resolve())
    with _CACHE_LOCK, path.open("rb") as handle:
        inode, offset, tail, entries = _CACHE.get(key, (None, 0, b"", {}))
        if offset:  # the lines read before must still be there (not replaced or rewritten in place)
            handle.seek(offset - len(tail))
            if inode != stat.st_ino or handle.read(len(tail)) != tail:
                offset, entries = 0, {}
        handle.seek(offset)
        data = handle.read()
        end = data.rfind(b"\n") + 1  # only whole lines; a line being written is read next time
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict) and "id" in entry:
                entries[entry["id"]] = entry
        offset += end
        handle.seek(max(0, offset - 64))
        _CACHE[key] = (stat.st_ino, offset, handle.read(offset - max(0, offset - 64)), entries)
        return dict(entries)


_CACHE: dict[str, tuple[int | None, int, bytes, dict[str, dict]]] = {}  # path → inode, offset read, its last bytes, entries
_CACHE_LOCK = threading.Lock()
