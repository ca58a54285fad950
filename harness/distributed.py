"""Running across processes and machines with torchrun.

    torchrun --nproc_per_node 2 bench.py run --protocol P --method M
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 --nproc_per_node 8 bench.py run ...

Feature extraction is sharded by video (rank r embeds videos r, r + N, r + 2N, ... of those missing) and
evaluation by episode chunk (chunk k goes to rank k mod N). Every rank writes its own files, atomically,
into the shared feature store and results folder; rank 0 then merges the chunks by episode index, so the
records are byte-identical to a single process's. gloo on CPU, NCCL when every rank has a GPU.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> tuple[int, int]:
    """(rank, world size) as torchrun gave them to this process in RANK and WORLD_SIZE; (0, 1) without torchrun.
    Reads the environment only: no process group is started (the console asks this before any work)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0, 1
    return (rank, size) if size > 1 and 0 <= rank < size else (0, 1)


def world() -> tuple[int, int]:
    """(rank, world size); starts the process group on first use under torchrun, (0, 1) otherwise."""
    if launched()[1] <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def device_for_rank(device: torch.device) -> torch.device:
    """Each process on a multi-GPU node takes the GPU of its local rank."""
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device
