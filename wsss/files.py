"""Atomic file writes: every file wsss writes appears whole or not at all.

    with atomic_path(path) as tmp:       # a temporary file beside ``path``
        image.save(tmp, format="PNG")    # write to it however the format needs
    # renamed to ``path`` on success; removed on any error (nothing is left behind)

    write_json(path, {"a": 1})           # the common case (NaN and infinities become null)
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "write_json", "write_text", "is_finished", "make_folder", "NotAFolderError"]


class NotAFolderError(ValueError):
    """An output folder that names an existing file (or a path through one)."""


def make_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` made a folder (with its parents) when missing; NotAFolderError naming it when it,
    or a folder above it, is an existing file (``--out`` naming a file)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "" if part == path else f" ({part} is a file)"
                raise NotAFolderError(f"{path}: the {what} names an existing file{where}, not a folder; give a folder "
                                      "(new, empty, or one this command wrote before)")
            break
    path.mkdir(parents=True, exist_ok=True)
    return path


def _process_umask() -> int:
    """This process's umask (read once: setting it to read it is not thread-safe later)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device, disk quota exceeded

_RANDOM_PART = 8  # the characters mkstemp puts between prefix and suffix


def _temporary_affixes(path: Path) -> tuple[str, str]:
    """The prefix and suffix of ``path``'s temporary name: ``.<stem>.`` and ``path``'s suffix,
    the stem cut so that the whole name (with mkstemp's random part) stays within the folder's
    NAME_MAX (255 bytes on ext4 and most others): a legal 251-character stem still gets a
    temporary name the file system accepts."""
    try:
        name_max = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    suffix = path.suffix
    room = name_max - len(os.fsencode(suffix)) - _RANDOM_PART - 2  # the two dots
    if room < 0:  # a suffix of ~245 bytes: none, rather than a name the file system refuses
        suffix, room = "", name_max - _RANDOM_PART - 2
    stem = path.stem
    while len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return f".{stem}.", suffix


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (created when missing; hidden name
    ``.<name>.*<suffix>``, the same suffix so format-sniffing writers behave, the name cut to
    fit the file system's NAME_MAX); on success it is renamed onto ``path``, on any error
    (interrupts included) it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_affixes(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode open() would
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        if error.errno in DISK_FULL_ERRNOS and not error.filename:  # a write() names no file: this one
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(path)) from error
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, content) -> Path:
    """Write JSON (indent 1) atomically; returns the path. A NaN or infinite number (an AP of a
    class without a positive, an undefined IoU) is written as null: strict JSON has no NaN."""
    return write_text(path, json.dumps(_finite(content), indent=1, allow_nan=False))


def _finite(content):
    """``content`` with every float (numpy's too) that is NaN or infinite replaced by None."""
    if isinstance(content, dict):
        return {key: _finite(value) for key, value in content.items()}
    if isinstance(content, (list, tuple)):
        return [_finite(value) for value in content]
    if isinstance(content, (float, np.floating)):
        return float(content) if math.isfinite(content) else None
    return content


def is_finished(path: str | os.PathLike) -> bool:
    """Whether an output file counts as done: it exists and is not empty (wsss writes every
    output atomically, so an empty file was left by something else and is redone)."""
    path = Path(path)
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False
