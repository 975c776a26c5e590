"""What an output was made from, so that a changed input is redone instead of adopted.

Every "ok" line a walk writes into ``OUT/manifest.jsonl`` holds the image's input record:

    "input": {"bytes": 48213, "mtime_ns": 1765092000123456789, "sha256": "9f2c…",
              "tags": ["cat", "dog"], "classes": "5be0…"}

(the image file's size, modification time and SHA-256; the tag names, sorted; a digest of the
data set's class list, whose order gives the label values). On the next run an output whose
record no longer matches is *stale* and is made again:

    stale = stale_outputs(dataset, ids, out_dir, "{}.png", tags=True)   # id → why

- the class list differs (reordered, renamed, grown): "class list changed";
- the tags differ (``tags``: the walk reads tags, e.g. pseudo-labels; predictions do not):
  "tags changed (cat → cat;dog)";
- the file's size or mtime differ *and* its SHA-256 differs: "image file changed" (a file that
  was only touched or copied keeps its label; the hash is read only when the stat differs).

An output without a record (written by a wsss before December 2026, or found on disk after a
hard stop) is trusted as it is.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from wsss.data.base import Dataset, DatasetError
from wsss.data.manifest import MANIFEST, read_manifest

__all__ = ["input_record", "stale_outputs", "describe_stale"]


def classes_digest(classes: list[str]) -> str:
    """A short digest of the class list in order (label i+1 is classes[i])."""
    return hashlib.sha256("\n".join(classes).encode("utf-8")).hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tag_names(dataset: Dataset, image_id: str) -> list[str] | str:
    try:
        return sorted(dataset.tag_names(image_id))
    except (DatasetError, OSError) as error:
        return f"error: {error}"


def input_record(dataset: Dataset, image_id: str) -> dict | None:
    """The input record of one image (see the module docstring); None when its file cannot be
    read (the walk has recorded why it failed)."""
    path = Path(dataset.image_path(image_id))
    try:
        stat = path.stat()
        sha = file_sha256(path)
    except OSError:
        return None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha,
            "tags": _tag_names(dataset, image_id), "classes": classes_digest(dataset.classes)}


def _why_stale(recorded: dict, dataset: Dataset, image_id: str, classes: str, tags: bool) -> str | None:
    """Why the output of ``image_id``, made from ``recorded``, is stale; None when it is not."""
    if recorded.get("classes") != classes:
        return "class list changed"
    if tags:
        now = _tag_names(dataset, image_id)
        if recorded.get("tags") != now:
            shown = lambda names: names if isinstance(names, str) else ";".join(names) or "none"  # noqa: E731
            return f"tags changed ({shown(recorded.get('tags') or [])} → {shown(now)})"
    path = Path(dataset.image_path(image_id))
    try:
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) == (recorded.get("bytes"), recorded.get("mtime_ns")):
            return None
        return None if file_sha256(path) == recorded.get("sha256") else "image file changed"
    except OSError:
        return "image file changed"  # gone or unreadable: the walk records why it fails


def stale_outputs(dataset: Dataset, ids: list[str], out_dir: str | os.PathLike, name: str = "{}.png",
                  tags: bool = True) -> dict[str, str]:
    """Of ``ids``, those whose finished output ``out_dir/name.format(id)`` exists but was made
    from other inputs than today's, id → why (the order of ``ids``). tags: compare the tags too
    (a walk whose outputs do not depend on them, e.g. predictions, passes False)."""
    out = Path(out_dir)
    entries = read_manifest(out / MANIFEST)
    classes = classes_digest(dataset.classes)
    stale = {}
    for image_id in ids:
        recorded = entries.get(image_id, {}).get("input")
        if not isinstance(recorded, dict) or not (out / name.format(image_id)).is_file():
            continue
        why = _why_stale(recorded, dataset, image_id, classes, tags)
        if why is not None:
            stale[image_id] = why
    return stale


def describe_stale(stale: dict[str, str]) -> str:
    """One line for the terminal: how many outputs are redone and why, with a few ids."""
    kinds: dict[str, list[str]] = {}
    for image_id, why in stale.items():
        kinds.setdefault(why.split(" (")[0], []).append(image_id)
    parts = [f"{len(ids)} {kind} ({', '.join(ids[:3])}{', …' if len(ids) > 3 else ''})" for kind, ids in kinds.items()]
    return f"{len(stale)} finished output(s) redone because their input changed since: " + "; ".join(parts)
