"""Process-group helpers: identical behaviour with one process and with torchrun's many.

Losses that are averaged over a subset of a batch whose size differs per process (MetaPrompt's
meta-train / meta-test halves) are written as ``sum / global count``, and gradients are summed across
processes, so that N processes compute exactly what one process computes on the global batch.
:class:`GlobalBatchSampler` makes the global batches themselves those of one process.
"""
from __future__ import annotations

import atexit
import os
from typing import Iterator, TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .errors import MetapromptError, PeerError

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def _collective_device() -> torch.device:
    """Where the backend reduces: the process's GPU under nccl, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all processes (itself when not distributed), on the tensor's own device."""
    if not is_distributed():
        return value
    reduced = value.to(_collective_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(value.device)


def global_count(n: int) -> float:
    """``n`` summed over all processes (a collective call, and a wait for it, only with several)."""
    if not is_distributed():
        return float(n)
    return float(global_sum(torch.tensor(float(n))).item())


def sum_gradients(tensors: list[torch.Tensor | None]) -> None:
    """In place: each gradient (or tensor) becomes its sum over processes, in one collective call.
    Every process must pass the same tensors (the same ones None)."""
    present = [t for t in tensors if t is not None]
    if not is_distributed() or not present:
        return
    flat = torch.cat([t.reshape(-1) for t in present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for t, part in zip(present, flat.split([t.numel() for t in present])):
        t.copy_(part.view_as(t))


def broadcast_from_main(tensors: list[torch.Tensor]) -> None:
    """In place: every process takes rank 0's values (as DistributedDataParallel does at its start)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def from_main(value: int) -> int:
    """Rank 0's ``value`` on every process (its own when not distributed): decisions that read files, which
    processes could otherwise see change between their reads, are taken once."""
    if not is_distributed():
        return value
    return int(global_sum(torch.tensor(value if is_main() else 0, dtype=torch.int64)).item())


def fail_together(error: BaseException | None) -> None:
    """Every process calls this at the same point with the error it met there, or None. If any met one, all
    raise (the process that met it its own error, the others :class:`PeerError`) instead of leaving the others
    waiting in the next collective call."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    failed = global_sum(torch.tensor(float(error is not None))).item()
    if error is not None:
        raise error
    if failed:
        raise PeerError("another process stopped with an error (that process printed it)")


def shard(items: list[T]) -> list[T]:
    """This process's contiguous share of ``items`` (shares differ in size by at most one)."""
    n, w, r = len(items), world_size(), rank()
    return items[r * n // w:(r + 1) * n // w]


def gather_rows(value: torch.Tensor) -> torch.Tensor:
    """The concatenation, in rank order, of every process's ``value`` (first dimensions may differ)."""
    if not is_distributed():
        return value
    parts: list[torch.Tensor | None] = [None] * world_size()
    dist.all_gather_object(parts, value.cpu())
    return torch.cat(parts)


class GlobalBatchSampler(Sampler[list[int]]):
    """Per-process batches that together are exactly the batches one process would train on.

    Each epoch shuffles all indices with a generator seeded by ``seed + epoch`` (as DistributedSampler
    does), cuts the permutation into global batches of ``batch_size`` (the incomplete last one is dropped
    unless it is the only one) and gives each process its contiguous share of every global batch.
    DistributedSampler instead pads its shard with repeated samples or drops samples per process, which
    changes the global batches with the number of processes. ``start`` skips the batches an interrupted
    epoch already trained on.
    """

    def __init__(self, size: int, batch_size: int, seed: int):
        if min(size, batch_size) < world_size():
            raise MetapromptError(f"{world_size()} processes cannot share a batch of {min(size, batch_size)} images")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.epoch, self.start, self.view = 0, 0, None

    def set_epoch(self, epoch: int, start: int = 0, view: int | None = None) -> None:
        """The epoch's order, from batch ``start`` on; with ``view``, each index comes as ``(index, view)``,
        the augmentation view the dataset draws it at (so that persistent loader workers see it)."""
        self.epoch, self.start, self.view = epoch, start, view

    @property
    def num_batches(self) -> int:
        """Global batches per epoch."""
        return max(self.size // self.batch_size, 1)

    def __len__(self) -> int:
        return self.num_batches - self.start

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        for b in range(self.start, self.num_batches):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            share = batch.tensor_split(world_size())[rank()].tolist()
            yield share if self.view is None else [(index, self.view) for index in share]


def launched() -> bool:
    """Whether torchrun (or a launcher that sets its variables) started this process as one of several."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: str | torch.device) -> str:
    """The process group's backend for a run on ``device``: nccl on CUDA, gloo on the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_environment(device: str | torch.device = "cpu") -> bool:
    """Join the process group torchrun describes in the environment, for the rest of the process, with the
    backend of the run's ``device`` (see :func:`select_device`): it is left at exit (torch warns otherwise),
    and later calls keep it."""
    if not launched() or is_distributed():
        return is_distributed()
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device))
    atexit.register(dist.destroy_process_group)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def select_device(requested: str | None) -> str:
    """The device a command runs on: ``requested`` (``--device``), checked against this machine, or, when none
    is asked for, this process's GPU when there is one, else the CPU. Under torchrun, ``cuda`` is the GPU of
    this process's LOCAL_RANK (see :func:`local_gpu`)."""
    if not requested:
        return f"cuda:{local_gpu()}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise MetapromptError(f"--device {requested}: not a torch device; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MetapromptError(f"--device {requested}: this machine has no CUDA device (torch "
                                  f"{torch.__version__}, torch.cuda.is_available() is False); use --device cpu")
        if device.index is None:
            return f"cuda:{local_gpu()}" if launched() else requested
        if device.index >= torch.cuda.device_count():
            raise MetapromptError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA "
                                  f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        if launched() and local_world_size() > 1:
            raise MetapromptError(f"--device {requested} under torchrun puts all {local_world_size()} processes of "
                                  "this node on one GPU; pass --device cuda (each process takes the GPU of its "
                                  "LOCAL_RANK) or set CUDA_VISIBLE_DEVICES per process")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MetapromptError(f"--device {requested}: MPS (Apple GPU) is not available here; use --device cpu")
    if device.type == "mps" and launched():
        raise MetapromptError(f"--device {requested}: several processes need cuda (nccl) or cpu (gloo)")
    return requested


CUBLAS_WORKSPACE = ":4096:8"


def use_deterministic_algorithms() -> None:
    """Deterministic kernels from here on (cuBLAS needs its workspace setting before its first use)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; 1 when not launched by it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def local_gpu() -> int:
    """The GPU index of this process: its LOCAL_RANK, or 0 when each process sees a GPU of its own (a
    launcher that sets CUDA_VISIBLE_DEVICES per process, as SLURM does). Refuses more processes on a node than
    it has GPUs, which would put two processes on one GPU (nccl fails on that)."""
    count, rank_here, per_node = torch.cuda.device_count(), local_rank(), local_world_size()
    if not launched():
        return 0
    if per_node > count:
        raise MetapromptError(
            f"torchrun started {per_node} processes on this node, but it has {count} visible CUDA device(s) "
            f"(LOCAL_RANK {rank_here}); start at most {count} per node (--nproc_per_node {count}), or train on "
            "the CPU with --device cpu (gloo)")
    if rank_here < count:
        return rank_here
    if count == 1:
        return 0
    raise MetapromptError(f"LOCAL_RANK {rank_here} has no GPU of its own: this node shows {count} CUDA devices")
