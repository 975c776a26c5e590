"""Walking a data set in batches of same-size images, recording images that cannot be read."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.images import ImageReadError


class Manifest:
    """An append-only JSON-lines record of every image's outcome: {"id", "status", "reason"}.

    status is "ok" or "failed"; each line is flushed at once, so an interruption loses nothing
    that was recorded. ``counts`` tallies this session's records (plus "skipped").
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}

    def record(self, image_id: str, status: str, reason: str = "", **extra) -> None:
        self.counts[status] += 1
        self._handle.write(json.dumps({"id": image_id, "status": status, "reason": reason, **extra}) + "\n")
        self._handle.flush()

    def skip(self) -> None:
        self.counts["skipped"] += 1

    def unfinished(self, ids: Iterable[str], output: Callable[[str], Path]) -> list[str]:
        """The ids whose ``output(id)`` file does not exist yet; the others count as skipped."""
        todo = []
        for image_id in ids:
            if output(image_id).is_file():
                self.skip()
            else:
                todo.append(image_id)
        return todo

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def same_size_batches(
    dataset: Dataset,
    ids: Iterable[str],
    batch_size: int,
    on_failure: Callable[[str, str], None],
    needs_tags: bool = True,
) -> Iterator[list[Sample]]:
    """Yield lists of at most ``batch_size`` loaded samples of one image size, in id order.

    An image that cannot be read (or has no tags, when ``needs_tags``) is reported through
    ``on_failure(id, reason)`` and left out; the walk goes on.
    """
    pending: list[Sample] = []
    for image_id in ids:
        try:
            sample = dataset.load(image_id)
        except (ImageReadError, DatasetError, FileNotFoundError) as error:
            on_failure(image_id, str(error))
            continue
        if needs_tags and not sample.tags.any():
            on_failure(image_id, "no tags: nothing to localise")
            continue
        if pending and pending[0].image.shape[:2] != sample.image.shape[:2]:
            yield pending
            pending = []
        pending.append(sample)
        if len(pending) == batch_size:
            yield pending
            pending = []
    if pending:
        yield pending
