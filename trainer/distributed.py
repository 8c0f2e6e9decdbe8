"""DDP under torchrun: who am I, and how do ranks agree.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE. Without them this is a single
process and every helper here is a cheap no-op, so the training loop has one
code path for one GPU, many GPUs and the CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group if launched by torchrun: nccl on GPUs, gloo on CPU."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each rank drives its own GPU."""
    if device.type == "cuda" and info.enabled:
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# Waiting for rank 0 to pretokenize a corpus can take longer than NCCL's 10-minute timeout;
# that one wait goes through a gloo group of its own with a long timeout, so the training
# collectives keep the short one that catches a real hang.
PREPARE_TIMEOUT = timedelta(minutes=float(os.environ.get("SPONGEBOB_PREPARE_TIMEOUT_MIN", "360")))
_prepare_group = None


def barrier(long: bool = False) -> None:
    """Wait for every rank; long=True for a wait that may last hours (rank 0 preparing the data)."""
    if not dist.is_initialized():
        return
    dist.barrier(group=_long_group() if long else None)


def _long_group():
    global _prepare_group
    if _prepare_group is None:
        _prepare_group = dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT)
    return _prepare_group


def broadcast_ints(values: list[int]) -> list[int]:
    """Rank 0's values on every rank (a CPU tensor over the gloo group: any backend, any device)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.long)
    dist.broadcast(t, src=0, group=_long_group())
    return t.tolist()


def shutdown() -> None:
    global _prepare_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _prepare_group = None
