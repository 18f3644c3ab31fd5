"""Process-group plumbing for ``torchrun``: set-up, reductions and gathers that are no-ops alone.

Started with ``torchrun --nproc_per_node N ...`` the environment holds ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; the group uses NCCL when the run is on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def available_devices() -> list[str]:
    """The devices this process can use: ``cpu``, then ``cuda:0`` ... and ``mps`` where present."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's CUDA device when there is one, else the CPU; a clear error for a device
    that does not exist here (naming the ones that do)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    devices = available_devices()
    here = ", ".join(devices)
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device: {requested!r} is not a device name; devices here: {here} (or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available here; devices here: {here}")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: there is no {device}; devices here: {here}")
        torch.cuda.set_device(device)
    elif device.type not in {d.split(":")[0] for d in devices}:
        raise ValueError(f"--device {requested}: not available here; devices here: {here}")
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group when launched by it (``WORLD_SIZE`` > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def reduce_min_max(lo: torch.Tensor, hi: torch.Tensor, ctx: DistContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest ``lo`` and largest ``hi`` over every rank (so a sharded batch normalises like the whole batch)."""
    if ctx.enabled:
        both = torch.stack([-lo, hi]).float()
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        lo, hi = (-both[0]).to(lo.dtype), both[1].to(hi.dtype)
    return lo, hi


def mean_across_ranks(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``t`` over ranks (a copy; the input is left alone)."""
    t = t.detach().clone()
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ctx.world_size
    return t


def all_true(flag: torch.Tensor, ctx: DistContext) -> bool:
    """Whether a boolean tensor is true on every rank (one reduction; the same answer everywhere)."""
    flag = flag.detach().to(torch.int32).reshape(1)
    if ctx.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def gather_objects(obj: Any, ctx: DistContext) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def print_on_main(ctx: DistContext, message: str) -> None:
    """Print ``message`` to stderr from rank 0 only (through tqdm, so progress bars stay intact)."""
    if ctx.is_main:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
