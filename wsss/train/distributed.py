"""Multi-process training with torchrun: process group set-up and a few collectives.

Launched as ``torchrun --nproc_per_node N -m wsss train segmenter ...`` (or
``python -m torch.distributed.run ...``), every process reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` from the environment torchrun sets; the process group uses NCCL on CUDA (one GPU
per process: ``cuda:LOCAL_RANK``) and gloo on CPU. Without those variables training runs in one
process, no process group.

A lost process (a killed or crashed rank) is recovered by torchrun's restarts
(``--max-restarts N``): torchrun stops the other ranks and starts them all again, and training
resumes from its last.pt (docs/segmenter.md). On one node torchrun's workers share its key-value
store across restarts and torch does not separate the attempts: a restarted rank would read the
lost group's addresses and fail to connect, or hang. :func:`setup_distributed` therefore keys the
process group's store by ``TORCHELASTIC_RESTART_COUNT`` on one node. Across several nodes that count is
not the same on every node (a node restarted for another node's failure does not count it), so
there torchrun needs ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per attempt); rank 0
says so at start when restarts are allowed without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from wsss.models.checkpoint import resolve_device

__all__ = ["Distributed", "setup_distributed"]


@dataclass
class Distributed:
    """This process's place: rank of world processes, its device, whether a group is up."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    enabled: bool

    @property
    def main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0

    def gather(self, value: object) -> list[object]:
        """Every process's ``value``, in rank order (a one-item list without a group)."""
        if not self.enabled:
            return [value]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group (after the last collective)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
            self.enabled = False


def setup_distributed(device: str) -> Distributed:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1, else a single process.

    device: ``train.device`` (auto, cpu, cuda, cuda:N). Under torchrun with CUDA each process
    takes ``cuda:LOCAL_RANK``; ValueError when there are fewer GPUs than local processes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world <= 1:
        return Distributed(0, 1, 0, resolved, enabled=False)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s): start at most "
                             "one process per GPU (torchrun --nproc_per_node)")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        attempt = _restart_attempt()
        if attempt is None:
            dist.init_process_group(backend=backend)
        else:
            store, _, _ = next(dist.rendezvous("env://"))
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"wsss/attempt_{attempt}/", store),
                                    rank=rank, world_size=world)
    if rank == 0 and _restarts_cannot_reconnect():
        print("warning: torchrun may restart this run (--max-restarts) on several nodes, but the restarted "
              "processes would read the lost ones' addresses from torchrun's shared store: set "
              "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun")
    return Distributed(rank, world, local_rank, resolved, enabled=True)


def _shares_agent_store() -> bool:
    """Whether the process group's keys go to torchrun's store, which outlives a restart."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def _one_node() -> bool:
    return os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE")


def _restart_attempt() -> str | None:
    """torchrun's restart count when it is the same in every process and the store is shared
    (one node: one agent counts for all), else None (a fresh store per attempt, or no torchrun)."""
    if _shares_agent_store() and _one_node():
        return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return None


def _restarts_cannot_reconnect() -> bool:
    """Several nodes, restarts allowed, and a store shared across attempts."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    return restarts > 0 and _shares_agent_store() and not _one_node()
