"""Rates, time left and progress lines of long loops (training epochs and steps, label shards).

    meter = RateMeter(total=2000, start=resumed_steps)   # rate counts this run's units only
    rate, left = meter.read(done)                        # units/s and seconds left (None: unknown yet)
    progress_line("step", done, total, ["loss 0.4321"], [format_rate(rate, "steps")], left)
    → "step 250/2000 (12 %)  loss 0.4321  2.86 steps/s  10 min 12 s left"

A loop reports through a callback ``on_progress(done, total, stats)`` (``ProgressCallback``):
``stats`` holds ``line`` (the text above) and the numbers behind it. The training code takes
one and prints the line when none is given; the flows turn it into a Prefect progress
artifact and a log line (``flows.progress_artifacts``). Nothing here imports Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

__all__ = ["ProgressCallback", "RateMeter", "format_duration", "format_rate", "progress_line", "percent"]

ProgressCallback = Callable[[int, int, dict], None]


def format_duration(seconds: float | None) -> str:
    """42 → "42 s", 185 → "3 min 05 s", 7500 → "2 h 05 min"; None → "?"."""
    if seconds is None or seconds != seconds:
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_rate(rate: float | None, unit: str) -> str:
    """Units per second, about three significant digits: "0.352 steps/s", "16.2 img/s", "123 img/s"."""
    if rate is None:
        return f"? {unit}/s"
    if rate >= 100:
        return f"{rate:.0f} {unit}/s"
    if rate >= 10:
        return f"{rate:.1f} {unit}/s"
    if rate >= 1:
        return f"{rate:.2f} {unit}/s"
    return f"{rate:.3f} {unit}/s"


def percent(done: int, total: int) -> float:
    """``done`` of ``total`` in percent, 0 to 100 (100 for an empty loop)."""
    return 100.0 if total <= 0 else min(100.0, max(0.0, 100.0 * done / total))


def progress_line(what: str, done: int, total: int, details: Sequence[str] = (), rates: Sequence[str] = (),
                  seconds_left: float | None = None, unit: str = "") -> str:
    """``"{what} {done}/{total} {unit} ({percent} %)  {details}  {rates}  {time} left"``; the time
    is left out once ``done`` reaches ``total``."""
    parts = [f"{what} {done}/{total}{' ' + unit if unit else ''} ({percent(done, total):.0f} %)", *details, *rates]
    if done < total:
        parts.append(f"{format_duration(seconds_left)} left")
    return "  ".join(parts)


class RateMeter:
    """The rate and time left of a loop of ``total`` units that starts (or resumes) at ``start``.

    The rate counts only the units done since this meter was made, over the time since then:
    a resumed run's earlier units took no time here. ``clock``: seconds (``time.perf_counter``).
    """

    def __init__(self, total: int, start: int = 0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.start, self.clock = total, start, clock
        self.started = clock()

    def elapsed(self) -> float:
        """Seconds since the meter was made."""
        return self.clock() - self.started

    def read(self, done: int) -> tuple[float | None, float | None]:
        """(units per second, seconds left) with ``done`` units finished: (None, None) before the
        first unit of this run (unknown), seconds left 0 once ``done`` reaches ``total``."""
        elapsed, new = self.elapsed(), done - self.start
        rate = new / elapsed if new > 0 and elapsed > 0 else None
        if done >= self.total:
            return rate, 0.0
        return rate, None if rate is None else (self.total - done) / rate
