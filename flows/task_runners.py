"""How the flows' tasks run: the task runner chosen by ``config.flow.task_runner``, which
failures are retried, and when a shard's result may come from the cache.

    threads     ThreadPoolTaskRunner(max_workers): one process; each thread loads its own model
    processes   ProcessPoolTaskRunner(max_workers): worker processes on this machine
    dask        prefect-dask's DaskTaskRunner: the scheduler at ``dask_address``, or a local
                cluster of ``max_workers`` single-threaded worker processes
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from wsss.config import FlowConfig
from wsss.steps.label_plan import labels_to_make
from wsss.steps.worker_cache import worker_dataset

RUNNERS = ("threads", "processes", "dask")


def make_task_runner(flow: FlowConfig) -> TaskRunner:
    """A new, not yet started task runner for ``flow`` (use it as a context manager)."""
    if flow.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=flow.max_workers)
    if flow.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=flow.max_workers)
    if flow.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if flow.dask_address:
            _check_default_dask_client(flow.dask_address)
            return DaskTaskRunner(address=flow.dask_address)
        return DaskTaskRunner(cluster_kwargs={
            "n_workers": flow.max_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
        })
    raise ValueError(f"flow.task_runner={flow.task_runner!r}: expected one of {', '.join(RUNNERS)}")


def _check_default_dask_client(address: str) -> None:
    """prefect-dask sends the shards to the cluster of this process's default Dask client when
    there is one, whatever ``address`` says: refuse that case rather than label elsewhere."""
    from distributed import Client

    try:
        current = Client.current(allow_global=True)
    except ValueError:  # none: the runner connects to ``address``
        return
    other = getattr(current.scheduler, "address", None)
    if other is not None and other != address:
        raise ValueError(f"flow.dask_address={address}, but this process has a default Dask client connected to "
                         f"{other}, where prefect-dask would send the shards; close that client, or make it with "
                         "Client(..., set_as_default=False)")


def retry_on_io_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a task only when it failed with an ``OSError``
    (disk, network file system, connection); a ValueError or any other error is final."""
    return isinstance(state.data, OSError)


@dataclass
class WhenShardLabelled(CachePolicy):
    """Cache policy of a shard task (inputs ``job``, a ``LabelJob``, and ``shard``, [id,
    fingerprint] pairs; ``run``, the flow run in words, is left out): the key of ``policy``
    (inputs, which hold the checkpoint digest and the images' fingerprints, + the task's source) once every image of the shard has its label on
    disk, made from the image, tags and class list it has now; no key while one is missing or
    stale, so a cached result never stands in for labels that are not there (deleted, or
    failed) or were made from other inputs (tags changed and changed back)."""

    policy: CachePolicy = field(default_factory=lambda: (INPUTS - "run") + TASK_SOURCE)  # not who runs it

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs):
        job = inputs["job"]
        if labels_to_make(worker_dataset(job), [image_id for image_id, _ in inputs["shard"]], job.out):
            return None
        return self.policy.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
