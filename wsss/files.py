"""Atomic file writes: every file wsss writes appears whole or not at all.

    with atomic_path(path) as tmp:       # a temporary file beside ``path``
        image.save(tmp, format="PNG")    # write to it however the format needs
    # renamed to ``path`` on success; removed on any error (nothing is left behind)

    write_json(path, {"a": 1})           # the common case
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_json", "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (created when missing; hidden name
    ``.<name>.*<suffix>``, the same suffix so format-sniffing writers behave); on success it
    is renamed onto ``path``, on any error (interrupts included) it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, content) -> Path:
    """Write JSON (indent 1) atomically; returns the path."""
    return write_text(path, json.dumps(content, indent=1))
