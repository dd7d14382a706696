"""Process-group helpers: identical behaviour with one process and with torchrun's many.

Losses that are averaged over a subset of a batch whose size differs per process (MetaPrompt's
meta-train / meta-test halves) are written as ``sum / global count``, and gradients are summed across
processes, so that N processes compute exactly what one process computes on the global batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all processes (itself when not distributed)."""
    if is_distributed():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def sum_gradients(tensors: list[torch.Tensor]) -> None:
    """In place: each gradient (or tensor) becomes its sum over processes."""
    if not is_distributed():
        return
    for t in tensors:
        if t is not None:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def init_from_environment() -> bool:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    if "RANK" not in os.environ or is_distributed():
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))
