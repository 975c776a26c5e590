"""What happened to the shards of a pseudo-labels run besides their labels, in log lines: images
another run was labelling (left to it, waited for), claims of a holder that is gone (a lost
worker: its shard redone), and workers that the Dask scheduler lost while they had shards.

    here = worker_address()                       # in a task: its Dask worker's address, or None
    for line in claim_lines(3, shard, result):    # result: label_ids' counts (+ "where")
        logger.warning(line)
    for line in lost_dask_workers(runner, {key: "shard 3 (ids a..d)", ...}):
        logger.warning(line)

A shard is named by its number in the run (1-based) and the first and last of its ids:
``shard 3 (ids 2007_000032..2007_000129)``.
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner

__all__ = ["worker_address", "shard_name", "claim_lines", "lost_dask_workers", "dask_key"]


def worker_address() -> str | None:
    """The address of the Dask worker running this code (``tcp://host:port``), or None outside one."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker().address
    except ValueError:  # not in a Dask worker (threads, processes)
        return None


def shard_name(number: int, shard: list[list]) -> str:
    """``shard N (ids first..last)`` of a shard ([id, fingerprint] pairs)."""
    first, last = shard[0][0], shard[-1][0]
    return f"shard {number} (ids {first}..{last})" if first != last else f"shard {number} (id {first})"


def _holder_of(record: dict) -> str:
    """The holder that lost its claims, shortest first: its Dask worker, else its process."""
    process = f"process {record.get('pid', '?')} on host {record.get('host', '?')}"
    return f"worker {record['worker']} ({process})" if record.get("worker") else process


def claim_lines(number: int, shard: list[list], result: dict) -> list[str]:
    """The lines a shard task's ``result`` (``label_ids``' counts, "where" it ran) calls for:
    a lost holder whose images were taken over (the shard redone), images left to another live
    run, images waited for."""
    name, lines = shard_name(number, shard), []
    for item in result.get("taken_over", []):
        holder = item["holder"]
        lines.append(f"{_holder_of(holder)} lost while it held {len(item['ids'])} image(s) of {name}"
                     + (f" for {holder['run']}" if holder.get("run") else "")
                     + f"; {name} redone on {result.get('where', 'another worker')}")
    for item in result.get("busy", []):
        lines.append(f"{name}: {len(item['ids'])} image(s) are being labelled by {item['said']}; left to it, "
                     "waited for at the end of this run")
    for item in result.get("others", []):
        lines.append(f"{name}: waited for {len(item['ids'])} image(s) that {item['said']} was labelling")
    return lines


def dask_key(future) -> str | None:
    """The Dask key of a task runner's future (prefect-dask's), or None for other runners."""
    key = getattr(getattr(future, "wrapped_future", None), "key", None)  # a distributed.Future's
    return None if key is None else str(key)


def lost_dask_workers(runner: TaskRunner, names: dict[str, str]) -> list[str]:
    """Lines for the workers that the Dask scheduler of ``runner`` removed while they had tasks
    of ``names`` (Dask key → shard name): each names the worker and its shards, which Dask ran
    again elsewhere. [] for other runners."""
    from prefect_dask import DaskTaskRunner

    if not isinstance(runner, DaskTaskRunner) or not names:
        return []
    lines = []
    for _, event in runner.client.get_events("all"):
        if not isinstance(event, dict) or event.get("action") != "remove-worker":
            continue
        held = sorted(names[key] for key in map(str, event.get("processing-tasks", ())) if key in names)
        if held:
            how = "left the cluster" if event.get("expected") else "was lost"
            lines.append(f"Dask scheduler: worker {event.get('worker')} {how} while it had {', '.join(held)}; "
                         "they ran again on the remaining workers")
    return lines
