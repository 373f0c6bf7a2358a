"""Data-parallel training under ``torchrun``: the process group, rank helpers and the few collectives
:func:`perceptlib.train.train` needs.

``torchrun --nproc-per-node N -m perceptlib train-sr ...`` starts N processes with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init` joins them
(NCCL on CUDA, gloo on the CPU) when ``WORLD_SIZE > 1``. Without torchrun (one process) every helper
here is a no-op: rank 0 of a world of 1.
"""
from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "env_world_size", "init", "cleanup", "is_distributed", "world_size", "rank", "local_rank", "is_main",
    "local_device", "RankSlice", "mean_values", "any_true", "broadcast_object", "on_main", "sync_batchnorm",
    "wrap",
]

T = TypeVar("T")


def env_world_size() -> int:
    """``$WORLD_SIZE`` (set by torchrun), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (``$RANK`` before :func:`init`), 0 for one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0) if env_world_size() > 1 else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if env_world_size() > 1 else 0


def is_main() -> bool:
    """Rank 0: the process that writes files and shows progress."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, a CUDA ``device`` becomes ``cuda:$LOCAL_RANK`` (one GPU per process), which is
    also made the current device; anything else is returned unchanged."""
    if device.type != "cuda" or env_world_size() <= 1:
        return device
    dev = torch.device("cuda", local_rank())
    torch.cuda.set_device(dev)
    return dev


def init(device: torch.device) -> bool:
    """Join the torchrun process group when ``$WORLD_SIZE > 1`` (NCCL for a CUDA ``device``, else
    gloo). Returns True when this call created the group (then :func:`cleanup` it), False when there
    is nothing to do or a group already exists."""
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} not set: launch with torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, **({"device_id": device} if device.type == "cuda" else {}))
    return True


def cleanup(synchronize: bool = True) -> None:
    """Leave and destroy the process group (no-op without one).

    With ``synchronize`` (every rank got here normally) a barrier comes first, so that no rank tears
    its gloo connections down while another is still finishing its last collective (one such exit
    aborted a worker with "terminate called without an active exception"). After an error on one rank
    the others may be inside a collective: then no barrier (it could pair with theirs, or wait for
    ever), as torchtitan's trainer does (pytorch/torchtitan#1342)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()


class RankSlice:
    """This rank's contiguous share of each batch of a sampler with ``indices(b) -> list[int]``: of a
    global batch of ``B`` indices, rank ``r`` of ``W`` takes ``[r * B / W, (r + 1) * B / W)``, so the
    ranks together draw exactly the batches one process would. ``B`` must be divisible by ``W``."""

    def __init__(self, sampler: Any, rank: int, world: int) -> None:
        if sampler.batch_size % world:
            raise ValueError(f"batch_size {sampler.batch_size} is not divisible by the {world} processes "
                             f"(WORLD_SIZE); the global batch is split evenly, so choose a multiple of {world}")
        self.sampler, self.rank, self.world = sampler, rank, world
        self.n, self.batch_size = sampler.n, sampler.batch_size // world

    def indices(self, batch: int) -> list[int]:
        k = self.batch_size
        return self.sampler.indices(batch)[self.rank * k:(self.rank + 1) * k]


def _collective_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_values(values: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """The mean over all ranks of each value (keys sorted; every rank must have the same keys). A NaN
    or inf on any rank makes that mean non-finite on every rank, so checks on it agree."""
    if not is_distributed():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(t)
    return dict(zip(keys, (t / world_size()).tolist()))


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a time limit: all stop at the same step)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s (picklable) ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def on_main(fn: Callable[[], T], share: bool = True) -> T | None:
    """``fn()`` on rank 0 only; its result (``share``; else None on the other ranks) or its exception
    reaches every rank, so all raise together instead of waiting for a rank that failed."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if rank() == 0:
        try:
            result = fn()
        except Exception as e:  # re-raised below on every rank
            error = e
    try:
        pickle.dumps(error)
        shared_error = error
    except Exception:  # an exception that does not pickle reaches the others as a RuntimeError
        shared_error = RuntimeError(f"rank 0 failed: {type(error).__name__}: {error}")
    sent = broadcast_object((result if share else None, shared_error))
    if error is not None:
        raise error
    if sent[1] is not None:
        raise sent[1]
    return result if rank() == 0 else sent[0]


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """With several processes, ``BatchNorm*`` layers become ``SyncBatchNorm`` (statistics over the
    global batch) on CUDA. PyTorch's SyncBatchNorm needs a GPU: on the CPU (gloo) the layers stay as
    they are and each process normalises with the statistics of its own share of the batch (running
    statistics: rank 0's, broadcast by DDP), which a warning says. State-dict keys do not change."""
    if not is_distributed() or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    warnings.warn(f"batch norm on {world_size()} CPU processes: SyncBatchNorm needs CUDA, so each process "
                  "normalises with the statistics of its own share of the batch (a 1-process run uses the whole "
                  "batch); norm='instance' or 'none' train identically", stacklevel=3)
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` with several processes (gradients averaged over ranks), else ``model``."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
