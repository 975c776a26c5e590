"""Progress where Prefect users look: a progress artifact kept current and a log line per report.

    progress = ArtifactProgress("classifier-training-progress", "the classifier of RUN")
    train_classifier(config, RunControl(on_progress=progress))   # each report: artifact → done/total %,
                                                                 # line → run log

``ArtifactProgress`` is the ``on_progress(done, total, stats)`` callback of the training code
(``wsss.progress``): it creates the artifact at 0 % when made (in a flow or task run), then
sets it to ``done/total`` and its description to the latest line, and logs ``stats["line"]``
with the run's logger. ``shard_line`` is the per-shard line of the labelling flows.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from wsss.progress import format_rate, percent, progress_line

__all__ = ["ArtifactProgress", "shard_line"]


class ArtifactProgress:
    """A progress artifact ``key`` (``description`` until the first report) and the run's log;
    call it as ``(done, total, stats)``. Make it inside a flow or task run."""

    def __init__(self, key: str, description: str) -> None:
        self.key, self.description = key, description
        self.logger = get_run_logger()
        self.artifact = create_progress_artifact(0.0, key=key, description=description)

    def __call__(self, done: int, total: int, stats: dict) -> None:
        line = stats["line"]
        update_progress_artifact(self.artifact, round(percent(done, total), 2),
                                 description=f"{self.description}: {line}")
        self.logger.info(line)


def shard_line(what: str, shards_done: int, shards: int, images_done: int, images: int, counts: dict,
               rate: float | None, seconds_left: float | None) -> str:
    """``"{what}: shard 3/8, 96/256 images (38 %)  ok 90  failed 1  skipped 5  2.41 img/s  1 min 06 s left"``:
    counts: the totals so far (ok, failed, skipped; ``errors``: shards that failed as a whole)."""
    details = [f"{key} {counts[key]}" for key in ("ok", "failed", "skipped", "errors") if key in counts]
    return progress_line(f"{what}: shard {shards_done}/{shards},", images_done, images, details,
                         [format_rate(rate, "img")], seconds_left, unit="images")
