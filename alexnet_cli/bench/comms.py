"""Bytes each device hands to collectives per training step, for every multi-device layout.

The paper's argument for its split (§3.2), and the 2014 sequel's for splitting by layer type, is
how little the devices must exchange. This measures it: gloo processes run one fp32 training step
of each layout on the ``paper`` network (1000 classes), counting every tensor this rank hands to
all_gather / all_reduce (the split's and the weird trick's gathers, and DDP's gradient buckets,
through a comm hook). What "batch" means differs by layout; the measurement fixes the images
whose conv layers one device computes, ``batch_size``:

- ``ddp`` (2 devices): each device its own batch of ``batch_size``;
- ``two-gpu`` (2 devices): the pair shares one batch of ``batch_size``, each device half the kernels;
- ``hybrid`` (4 devices): two such pairs, data-parallel across pairs;
- ``weird-trick`` (2 devices): each device its own batch for the conv layers; the FC layers see both.
"""

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F

from alexnet_cli.models import ARCHS
from alexnet_cli.parallel.spawn import run_in_processes

LAYOUT_DEVICES = {"ddp": 2, "two-gpu": 2, "hybrid": 4, "weird-trick": 2}
CLASSES = 1000  # ImageNet's
SIDE = ARCHS["paper"].input_size


@dataclass
class CommunicationReport:
    batch_size: int
    bytes_by_layout: dict[str, dict[str, int]] = field(default_factory=dict)  # layout → exchange point → bytes

    def total(self, layout: str) -> int:
        return sum(self.bytes_by_layout[layout].values())


def _counting_ddp(model: torch.nn.Module, group, counted: dict[str, int], point: str):
    """DDP over ``group`` whose gradient all-reduce adds every bucket's bytes to ``counted[point]``."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    def hook(state, bucket):
        counted[point] = counted.get(point, 0) + bucket.buffer().numel() * bucket.buffer().element_size()
        return allreduce_hook(state, bucket)

    ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=group)
    ddp.register_comm_hook(group, hook)
    return ddp


def _step(layout: str, batch_size: int, rank: int, _world: int) -> dict[str, int]:
    """One training step of ``layout`` on this rank; the bytes it handed to collectives, by exchange point."""
    from alexnet_cli.models import build_model
    from alexnet_cli.parallel.towers import TowerParallelAlexNet
    from alexnet_cli.parallel.weird_trick import WeirdTrickAlexNet

    world = LAYOUT_DEVICES[layout]
    torch.manual_seed(rank)
    images, labels = torch.randn(batch_size, 3, SIDE, SIDE), torch.randint(0, CLASSES, (batch_size,))
    full = build_model("paper", CLASSES)
    counted: dict[str, int] = {}
    if layout == "ddp":
        model = _counting_ddp(full, None, counted, "gradient all-reduce")
        F.cross_entropy(model(images), labels).backward()
        return counted
    if layout == "weird-trick":
        model = WeirdTrickAlexNet(full, rank=rank, size=world, group=dist.group.WORLD)
        F.cross_entropy(model(images), model.gather_labels(labels)).backward()
        model.sync_conv_gradients()
        return dict(model.log.bytes_by_point)
    # two-gpu and hybrid: pairs (2k, 2k+1) hold one network; every rank creates every group, in order
    pairs = [dist.new_group([2 * k, 2 * k + 1]) for k in range(world // 2)]
    replicas = [dist.new_group(list(range(tower, world, 2))) for tower in range(2)]
    towers = TowerParallelAlexNet(full, rank=rank % 2, size=2, group=pairs[rank // 2])
    model = towers if world == 2 else _counting_ddp(towers, replicas[rank % 2], counted,
                                                    "gradient all-reduce across pairs")
    F.cross_entropy(model(images), labels).backward()
    return {**towers.log.bytes_by_point, **counted}


def measure_communication(batch_size: int = 128, layouts: list[str] | None = None) -> CommunicationReport:
    """One fp32 training step of each layout in gloo processes; bytes per device (rank 0's)."""
    report = CommunicationReport(batch_size)
    for layout in layouts or list(LAYOUT_DEVICES):
        step = partial(_step, layout, batch_size)
        report.bytes_by_layout[layout] = run_in_processes(step, LAYOUT_DEVICES[layout])
    return report
