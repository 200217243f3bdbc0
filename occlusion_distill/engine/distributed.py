"""Several processes, one run: ``torchrun --nproc_per_node N -m occlusion_distill run ...``.

torchrun starts N copies and sets RANK / WORLD_SIZE / LOCAL_RANK; ``setup`` joins them into one process
group (NCCL on GPUs, gloo on CPU). Rank 0 alone writes files and shows progress; every rank trains its
share of each batch under DistributedDataParallel. Outside torchrun everything here is a no-op.
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..errors import UsageError


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


_DEVICE: str | None = None  # this rank's device, once the group is joined


def setup(device: str) -> str:
    """Join the process group when launched by torchrun; returns the device this rank trains on."""
    global _DEVICE
    if active():
        return _DEVICE or device
    if not launched():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    except Exception as exc:
        raise UsageError(f"could not join the torchrun process group: {type(exc).__name__}: {exc}") from exc
    _DEVICE = f"cuda:{local}" if use_cuda else "cpu"
    return _DEVICE


def _comm_device() -> torch.device:
    """Where collective tensors must live: the rank's GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def all_gather_rows(x: np.ndarray) -> np.ndarray:
    """Every rank's rows, concatenated in rank order (ranks may hold different numbers of rows)."""
    if not active():
        return x
    dev = _comm_device()
    t = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(t)], dtype=torch.int64, device=dev))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[:len(t)] = t
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)]).cpu().numpy()


def sum_across(values: dict[str, float]) -> dict[str, float]:
    """Sum named numbers over ranks (training-loss sums and counts)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return {k: float(v) for k, v in zip(keys, t.cpu().tolist())}


def average_gradients(params) -> None:
    """Average the gradients of parameters that DDP does not wrap (a distiller's own, e.g. a projection)."""
    if not active():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()


def sync_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if active():
        for buf in model.buffers():
            moved = buf.data.to(_comm_device())
            dist.broadcast(moved, src=0)
            buf.data.copy_(moved)
