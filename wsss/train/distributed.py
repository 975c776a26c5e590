"""Multi-process training with torchrun: process group set-up and a few collectives.

Launched as ``torchrun --nproc_per_node N -m wsss train segmenter ...`` (or
``python -m torch.distributed.run ...``), every process reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` from the environment torchrun sets; the process group uses NCCL on CUDA (one GPU
per process: ``cuda:LOCAL_RANK``) and gloo on CPU. Without those variables training runs in one
process, no process group.
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
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, resolved, enabled=True)
