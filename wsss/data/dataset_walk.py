"""The one walk over a data set that every step uses (maps, saliency, pseudo-labels,
predictions, scoring):

    ids → skip what is finished → batches (``same_size_batches``: grouped by size, full on a
        mix of sizes, never padded) → compute → write → manifest → progress

    counts = run_dataset(dataset, compute, write, Walk(batch_size=8, desc="pseudo-labels"),
                         WalkFiles(OUT))              # OUT/<id>.png done: skipped; OUT/manifest.jsonl

What travels together is grouped: :class:`Walk` says which images, how (``batch_size``, the
progress bar's ``desc``, ``progress``, ``on_failure``) and what to read of each (``needs_tags``,
``needs_masks``); :class:`WalkFiles` where the walk keeps its record (``out_dir``) and which
file of an image means it is finished (``name``, e.g. ``"{}.png"`` or ``"maps/{}.npz"``).

``compute(batch)`` returns one result per sample of the batch, or a :class:`Deferred` whose
``finish()`` returns them: the walk then computes the next batch before it waits for this one
(e.g. while the CRF pool refines this batch's labels) and writes batches in order.
``write(sample, result)`` stores
it (atomically: ``wsss.files``) or raises :class:`SampleFailed` with the reason; a dict it
returns goes into the image's manifest entry (e.g. the pseudo-labels' "confidence"). An image
that cannot be read, has no tags (when ``needs_tags``), whose computation raises
ValueError/RuntimeError (the batch is retried one image at a time to find it), or whose output
name is too long for the file system (e.g. ``<id>_<class>.png`` of a long id) fails alone:
it is recorded in ``OUT/manifest.jsonl`` ({"id", "status": "ok"|"failed", "reason"}; an ok
entry also holds the image's ``input`` record, ``wsss.data.input_records``) and the walk goes
on. An image over the data set's ``max_side`` is computed at a reduced size
(``wsss.data.size_limit``; writers bring outputs back with ``at_source_size``): a line on the
terminal and a "note" in its manifest entry say so. Images whose finished file exists are
skipped, so a re-run finishes an interrupted one; a finished output whose image file, tags
or class list changed since it was written is made again (counts' "redone"; a line says
why). Without ``WalkFiles`` nothing is recorded or skipped (scoring walks); failures still
reach ``Walk.on_failure``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsss.data.base import Dataset, Sample
from wsss.data.batching import SizeKey, same_size_batches
from wsss.data.input_records import describe_stale, input_record, stale_outputs
from wsss.data.manifest import MANIFEST, Manifest
from wsss.files import is_finished

__all__ = ["Deferred", "Manifest", "SampleFailed", "Walk", "WalkFiles", "run_dataset", "MANIFEST"]

class Deferred:
    """A batch's results still being computed elsewhere (e.g. CRF jobs in a process pool).

    finish: waits and returns one result per sample of the batch; it may raise as ``compute``
    may (a ValueError or RuntimeError makes the walk retry the batch one image at a time).
    """

    def __init__(self, finish: Callable[[], Sequence[Any]]) -> None:
        self.finish = finish


class SampleFailed(Exception):
    """Raised by a runner's ``write`` for an image whose result cannot be used (the reason)."""


class _Tally:
    """Counts (and, with an out folder, the manifest) of one walk."""

    def __init__(self, manifest: Manifest | None, bar, on_failure: Callable[[str, str], None] | None):
        self.manifest, self.bar, self.on_failure = manifest, bar, on_failure
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self.notes: dict[str, str] = {}

    def note(self, image_id: str, text: str) -> None:
        """Something the user should know about an image that is still computed (a resize)."""
        self.notes[image_id] = text
        if self.bar.disable:  # no bar (e.g. a flow's task): a print, which Prefect logs
            print(f"{image_id}: {text}", flush=True)
        else:
            tqdm.write(f"{image_id}: {text}")

    def ok(self, image_id: str, extra: dict | None = None) -> None:
        self.counts["ok"] += 1
        if self.manifest is not None:
            note = self.notes.pop(image_id, "")
            self.manifest.record(image_id, "ok", **({"note": note} if note else {}), **(extra or {}))
        self.bar.update(1)

    def failed(self, image_id: str, reason: str) -> None:
        self.counts["failed"] += 1
        self.notes.pop(image_id, None)
        if self.manifest is not None:
            self.manifest.record(image_id, "failed", reason)
        if self.on_failure is not None:
            self.on_failure(image_id, reason)
        self.bar.update(1)


@dataclass(frozen=True)
class Walk:
    """Which images a walk visits, how, and what it reads of each.

    ids: the images (default: every image of the data set); batch_size: images per batch;
    desc: the progress bar's label; progress: show the bar; on_failure: called with (id,
    reason) for every image that fails; needs_tags: an image without tags fails (maps,
    pseudo-labels); needs_masks: read the masks (scoring walks; other walks never open them);
    size_key: images whose (H, W) give one key may share a batch (``wsss.data.batching``; None:
    one exact size per batch).
    """

    ids: Iterable[str] | None = None
    batch_size: int = 8
    desc: str = ""
    progress: bool = True
    on_failure: Callable[[str, str], None] | None = None
    needs_tags: bool = True
    needs_masks: bool = False
    size_key: SizeKey | None = None


@dataclass(frozen=True)
class WalkFiles:
    """Where a walk that writes keeps its record: ``out_dir/manifest.jsonl`` (appended), and
    ``out_dir/name.format(id)``, the file whose existence means an image is finished (an empty
    file does not count): it is skipped."""

    out_dir: str | os.PathLike
    name: str = "{}.png"

    def finished(self, image_id: str) -> Path:
        return Path(self.out_dir) / self.name.format(image_id)


def _stale(dataset: Dataset, ids: list[str], todo: list[str], files: WalkFiles | None, tags: bool) -> dict[str, str]:
    """The finished outputs among ``ids`` made from other inputs than today's (``input_records``),
    id → why; their files are deleted (a redo that fails leaves no stale output behind) and a
    line says how many and why."""
    if files is None or len(todo) == len(ids):
        return {}
    pending = set(todo)
    stale = stale_outputs(dataset, [i for i in ids if i not in pending], files.out_dir, files.name, tags=tags)
    for image_id in stale:
        files.finished(image_id).unlink(missing_ok=True)
    if stale:
        print(describe_stale(stale), flush=True)
    return stale


def run_dataset(
    dataset: Dataset,
    compute: Callable[[list[Sample]], Sequence[Any]],
    write: Callable[[Sample, Any], dict | None],
    walk: Walk = Walk(),
    files: WalkFiles | None = None,
) -> dict:
    """Walk ``walk.ids`` of ``dataset`` (default: every image); returns counts {ok, skipped,
    failed}. With ``files``, finished images are skipped and every outcome is recorded in its
    manifest; without, nothing is skipped or recorded."""
    ids = list(dataset.ids if walk.ids is None else walk.ids)
    manifest = Manifest(Path(files.out_dir) / MANIFEST) if files is not None else None
    todo = [i for i in ids if files is None or not is_finished(files.finished(i))]
    stale = _stale(dataset, ids, todo, files, walk.needs_tags)
    if stale:
        todo = [i for i in ids if i in stale or not is_finished(files.finished(i))]
    bar = tqdm(total=len(todo), desc=walk.desc, unit="img", disable=not walk.progress)
    tally = _Tally(manifest, bar, walk.on_failure)
    tally.counts["skipped"] = len(ids) - len(todo)
    if stale:
        tally.counts["redone"] = len(stale)
    if manifest is not None and len(todo) < len(ids):  # an output written just before a hard stop: recorded now
        recorded, pending = manifest.recorded_ids(), set(todo)
        for image_id in ids:
            if image_id not in pending and image_id not in recorded:
                manifest.record(image_id, "ok", note="found finished on disk; its manifest line was lost (a hard stop)")

    def failed(batch: list[Sample], error: Exception) -> None:
        if len(batch) > 1:  # find the image that fails: one at a time
            for sample in batch:
                handle([sample])
            return
        tally.failed(batch[0].id, f"{type(error).__name__}: {error}")

    def write_batch(batch: list[Sample], results: Sequence[Any]) -> None:
        for sample, result in zip(batch, results):
            try:
                extra = write(sample, result)
            except SampleFailed as reason:
                tally.failed(sample.id, str(reason))
                continue
            except OSError as error:  # a name the id makes too long (e.g. cam's <id>_<class>.png): this image only
                if error.errno != errno.ENAMETOOLONG:
                    raise
                tally.failed(sample.id, f"{error.filename}: file name too long for the file system "
                                        f"({len(os.fsencode(Path(error.filename or '').name))} bytes; most allow 255)")
                continue
            if manifest is not None:  # what the output was made from: a later change of it is redone
                extra = {**(extra or {}), "input": input_record(dataset, sample.id),
                         **({"redone": stale[sample.id]} if sample.id in stale else {})}
            tally.ok(sample.id, extra)

    def finish(batch: list[Sample], results: Sequence[Any] | Deferred) -> None:
        try:
            if isinstance(results, Deferred):
                results = results.finish()
        except (ValueError, RuntimeError) as error:
            failed(batch, error)
            return
        write_batch(batch, results)

    def handle(batch: list[Sample]) -> None:  # one batch, start to end
        try:
            results = compute(batch)
        except (ValueError, RuntimeError) as error:  # RuntimeError: e.g. eigh not converging
            failed(batch, error)
            return
        finish(batch, results)

    pending: tuple[list[Sample], Deferred] | None = None  # the batch computed last, not yet written
    try:
        for batch in same_size_batches(dataset, todo, walk.batch_size, tally.failed, needs_tags=walk.needs_tags,
                                       masks=walk.needs_masks, on_note=tally.note, size_key=walk.size_key):
            try:
                results = compute(batch)
            except (ValueError, RuntimeError) as error:
                results = error
            if pending is not None:
                finish(*pending)
                pending = None
            if isinstance(results, Exception):
                failed(batch, results)
            elif isinstance(results, Deferred):
                pending = (batch, results)
            else:
                write_batch(batch, results)
        if pending is not None:
            finish(*pending)
    finally:
        bar.close()
        if manifest is not None:
            manifest.close()
    return tally.counts
