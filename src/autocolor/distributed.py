"""torchrun in a few functions: who am I, which device, which share of the work.

Everything reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT); one process with none of it set is a world of one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

T = TypeVar("T")


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when launched by torchrun; else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo(), pick_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # NCCL for GPU tensors, gloo for CPU ones (counts, checks) in the same group.
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return info, device


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """:func:`init_distributed` for the length of a block, then leave the
    process group again (only if this block joined it), even on an error."""
    joined_before = dist.is_available() and dist.is_initialized()
    info, device = init_distributed(device_name)
    try:
        yield info, device
    finally:
        if not joined_before and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on at least one (``flag`` itself for one process).

    Decisions that change which collective operations come next (skip a step,
    stop the run) must be taken this way, or one rank leaves while the others
    wait for it forever.
    """
    if info.world == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)  # on the CPU: the gloo half of the group
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of ``items``: every world-th one, so each is done exactly once."""
    return list(items[info.rank :: info.world])


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum numbers over all ranks (identity for a single process)."""
    if info.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def weights_spread_across_ranks(model: nn.Module) -> float:
    """Largest difference of any parameter between ranks (0 when DDP kept them in sync)."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    low, high = flat.clone(), flat.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float((high - low).max())
