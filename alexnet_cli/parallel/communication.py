"""Bytes each device hands to collectives per training step: the paper's split vs DDP.

The paper's argument for its split (§3.2) was that the GPUs only talk at a few
layers. This measures it: two gloo processes run one training step of the split
(counting every tensor given to all_gather / all_reduce) and one step of DDP over
the single-device model (counting the gradient buckets its all-reduce sends).
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from alexnet_cli.parallel.layout import free_port


@dataclass
class CommunicationReport:
    batch_size: int
    split_bytes: dict[str, int]  # per exchange point, per device per step
    ddp_bytes: int

    @property
    def split_total(self) -> int:
        return sum(self.split_bytes.values())


def _worker(rank: int, port: int, batch_size: int, out: str) -> None:
    from alexnet_cli.models import build_model
    from alexnet_cli.parallel.towers import TowerParallelAlexNet

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    images, labels = torch.randn(batch_size, 3, 227, 227), torch.randint(0, 1000, (batch_size,))
    towers = TowerParallelAlexNet(build_model("paper"), rank=rank, size=2, group=dist.group.WORLD)
    F.cross_entropy(towers(images), labels).backward()
    split = dict(towers.log.bytes_by_point)
    del towers

    ddp_bytes = [0]

    def counting_allreduce(state, bucket):
        ddp_bytes[0] += bucket.buffer().numel() * bucket.buffer().element_size()
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        return allreduce_hook(state, bucket)

    ddp = torch.nn.parallel.DistributedDataParallel(build_model("paper"))
    ddp.register_comm_hook(None, counting_allreduce)
    F.cross_entropy(ddp(images[: max(1, batch_size // 2)]), labels[: max(1, batch_size // 2)]).backward()
    if rank == 0:
        torch.save({"split": split, "ddp": ddp_bytes[0]}, out)
    dist.barrier()
    dist.destroy_process_group()


def measure_communication(batch_size: int = 128) -> CommunicationReport:
    """One fp32 training step each way on two CPU processes; bytes per device."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "bytes.pt")
        mp.spawn(_worker, args=(free_port(), batch_size, out), nprocs=2, join=True)
        measured = torch.load(out, weights_only=True)
    return CommunicationReport(batch_size, measured["split"], measured["ddp"])
