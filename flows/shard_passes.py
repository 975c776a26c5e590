"""The shards of one pseudo-labels run on a task runner, in two passes, with their tallies.

    passes = ShardPasses(plan, out, run)                           # in a flow run
    passes.run(runner, shard_task, {"job": job}, first_pass, wait=False)
    passes.run(runner, shard_task, {"job": job}, passes.deferred(), wait=True)
    passes.totals, passes.errors, passes.dask_names

First pass: every shard once; a shard task leaves the images that another live run holds
(``wsss.steps.image_claims``) to it and says so. Second pass: those images only, each shard's
task waiting until the other run has released them (labelled: skipped here) or is gone (taken
over: labelled here). After each finished shard the progress artifact and its log line move
(``shard_line``); the lines of ``shard_events.claim_lines`` (images left to another run, a lost
worker's shard redone) go to the run's log as warnings.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner

from flows.progress_artifacts import ArtifactProgress, shard_line
from flows.shard_events import claim_lines, dask_key, shard_name
from wsss.progress import RateMeter
from wsss.steps.label_plan import Plan

__all__ = ["ShardPasses"]


class ShardPasses:
    """Shard tasks of ``plan`` labelling into ``out`` as ``run`` (the flow run in words), and
    what they add up to: ``totals`` {ok, skipped, failed, loads, redone, by_other_runs},
    ``errors`` (shards that failed as a whole), ``dask_names`` (Dask key → shard name, for
    ``shard_events.lost_dask_workers``)."""

    def __init__(self, plan: Plan, out: Path, run: str | None):
        self.plan, self.who = plan, run
        self.totals = {"ok": 0, "skipped": len(plan.done), "failed": 0, "loads": 0, "redone": 0, "by_other_runs": 0}
        self.errors: list[BaseException] = []
        self.dask_names: dict[str, str] = {}
        self._deferred: list[tuple[int, list[list]]] = []  # (number, the images another run held)
        self._shards: dict[int, list[list]] = dict(enumerate(plan.shards, 1))
        self._finished = self._shards_done = self._labelled = 0  # images of finished shards; shards; labelled here
        self._meter = RateMeter(plan.total - len(plan.done))
        self._progress = ArtifactProgress("pseudo-labels-progress", f"pseudo-labels in {out}")

    def deferred(self) -> list[tuple[int, list[list]]]:
        """(shard number, its images that another run held) for the second pass."""
        return list(self._deferred)

    def run(self, runner: TaskRunner, task, arguments: dict, shards: list[tuple[int, list[list]]], wait: bool) -> None:
        """Submit ``task`` with ``arguments`` for each (number, shard) and tally each result as it
        finishes; wait: the second pass (the task waits for images other runs hold)."""
        futures = {}
        for number, shard in shards:
            future = runner.submit(task, {**arguments, "shard": shard, "run": self.who, "wait": wait})
            futures[future] = (number, shard)
            key = dask_key(future)
            if key is not None:
                self.dask_names[key] = shard_name(number, self._shards[number])
        for future in as_completed(list(futures)):
            number, shard = futures[future]
            self._tally(number, shard, future.result(raise_on_failure=False), wait)

    def _tally(self, number: int, shard: list[list], result, wait: bool) -> None:
        whole = self._shards[number]
        if isinstance(result, BaseException):
            self.errors.append(result)
        else:
            logger = get_run_logger()
            for line in claim_lines(number, whole, result):
                logger.warning(line)
            busy = {image_id for item in result.get("busy", []) for image_id in item["ids"]}
            if self.plan.pending(shard):  # a shard finished before this run counts as skipped (cached or not)
                for key in ("ok", "failed", "loads", "redone"):
                    self.totals[key] += result.get(key, 0)
                # skipped by the task but not labelled when this run began: another run labelled them meanwhile
                before = sum(1 for image_id, _ in shard if image_id in self.plan.done and image_id not in busy)
                self.totals["by_other_runs"] += result.get("skipped", 0) - before
            if busy:  # the rest of this shard comes in the second pass
                self._deferred.append((number, [pair for pair in shard if pair[0] in busy]))
                return
        self._finished += len(whole)
        self._shards_done += 1
        self._labelled += self.plan.pending(whole)
        rate, left = self._meter.read(self._labelled)
        counts = {**{key: self.totals[key] for key in ("ok", "failed", "skipped")},
                  **({"errors": len(self.errors)} if self.errors else {})}
        line = shard_line("pseudo-labels", self._shards_done, len(self.plan.shards), self._finished, self.plan.total,
                          counts, rate, left)
        self._progress(self._finished, self.plan.total, {"line": line})
