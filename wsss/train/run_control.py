"""How one training call runs, apart from what it trains: resume or restart, where progress goes,
where to stop.

    control = RunControl(restart=False, progress=False, on_progress=artifact, stop_after=500)
    train_segmenter(recipe, files, control=control)
"""

from __future__ import annotations

from dataclasses import dataclass

from wsss.progress import ProgressCallback

__all__ = ["RunControl"]


@dataclass(frozen=True)
class RunControl:
    """restart: ignore the run's last.pt and start over. progress: tqdm's bar on the terminal.
    stop_after: stop (with a checkpoint) once this many steps are done, so that a later call
    resumes (segmenter only; None: run to the end). on_progress(done, total, stats): called at
    every progress report (stats["line"] is the line; None: the line is printed)."""

    restart: bool = False
    progress: bool = True
    stop_after: int | None = None
    on_progress: ProgressCallback | None = None

    def __post_init__(self) -> None:
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after={self.stop_after}: expected a positive number of steps")
