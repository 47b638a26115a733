"""Process-group set-up for torchrun, and the two ways of wrapping the model (DDP, FSDP2).

Everything collective comes from ``torch.distributed``: a single process runs the same code with
``world_size == 1`` and no process group. Under ``torchrun`` the environment names rank and world
size; CPU runs use the gloo backend (that is how the tests run two processes), CUDA runs NCCL.
``torchrun --nproc-per-node 1`` joins a group of one and wraps the model all the same, so one GPU
runs the multi-GPU code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    grouped: bool = False
    """In a torch.distributed process group (started by torchrun, or more than one process)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.grouped


def init_distributed() -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    grouped = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if grouped and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(rank, world, local, device, grouped)


def wrap_model(module: nn.Module, blocks: nn.ModuleList, info: DistInfo, mode: Literal["ddp", "fsdp"]) -> nn.Module:
    """DDP around the whole module, or FSDP2 with one shard group per block and one for the rest."""
    if not info.enabled:
        return module
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in blocks:
            fully_shard(block)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over processes (a copy; ``t`` itself is left alone)."""
    if not info.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
