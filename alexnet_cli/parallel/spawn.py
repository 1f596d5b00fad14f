"""Processes this tool starts itself (outside Lightning): multi-device evaluation and the
communication benchmark. One place for the loopback rendezvous, the process group and the way a
result comes back."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.ranks import free_port

Result = TypeVar("Result")


CPU_PROCESSES_PER_CORE = 2  # gloo ranks sharing a core still finish; many more starve the rendezvous


def refuse_more_devices_than_present(option: str, wanted: int, device: str) -> None:
    """One process per device: more processes than the machine has GPUs fail, and far more than its CPU cores
    (the ones this process may use) crawl or hang in the rendezvous (--devices 64 on 2 cores printed nothing
    for minutes). Two CPU processes per core are allowed: a 4-rank layout (hybrid) still runs on 2 cores."""
    if device == "gpu":
        present, what = torch.cuda.device_count(), "CUDA GPU(s)"
        limit = present
    else:
        present, what = len(os.sched_getaffinity(0)), "CPU core(s) for this process"
        limit = CPU_PROCESSES_PER_CORE * present
    if wanted > limit:
        raise AlexnetError(f"{option} {wanted}: this machine has {present} {what}; give at most {limit}")


def run_in_processes(work: Callable[[int, int], Result], world: int, *, backend: str = "gloo") -> Result:
    """Run ``work(rank, world)`` in ``world`` fresh processes joined in one process group (``nccl``: one
    GPU each); returns rank 0's result, which must be tensors, numbers, strings or lists and dicts of those
    (it comes back through ``torch.save``/``torch.load(weights_only=True)``). ``work`` must pickle: a
    module-level function or a ``functools.partial`` of one."""
    with tempfile.TemporaryDirectory(prefix="alexnet-spawn-") as folder:
        out = Path(folder) / "rank0.pt"
        mp.spawn(_process, args=(world, free_port(), backend, work, str(out)), nprocs=world, join=True)
        return torch.load(out, weights_only=True)


def _process(rank: int, world: int, port: int, backend: str, work: Callable, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        result = work(rank, world)
        if rank == 0:
            torch.save(result, out)
        dist.barrier()  # rank 0's file is whole before any process leaves
    finally:
        dist.destroy_process_group()
