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
from functools import partial, singledispatch

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from alexnet_cli.models import ARCHS, build_model
from alexnet_cli.parallel.collectives import counting_ddp
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.layouts import LAYOUTS, benchmarked_layouts
from alexnet_cli.parallel.spawn import run_in_processes
from alexnet_cli.parallel.towers import TENSOR_PARALLEL, TowerLayout, TowerParallelAlexNet, tower_groups
from alexnet_cli.parallel.weird_trick import WeirdTrickAlexNet, WeirdTrickLayout

LAYOUT_DEVICES = benchmarked_layouts()
CLASSES = 1000  # ImageNet's
SIDE = ARCHS["paper"].input_size


@dataclass
class CommunicationReport:
    batch_size: int
    bytes_by_layout: dict[str, dict[str, int]] = field(default_factory=dict)  # layout → exchange point → bytes

    def total(self, layout: str) -> int:
        return sum(self.bytes_by_layout[layout].values())


@singledispatch
def measured_step(layout: Layout, full: nn.Module, images: torch.Tensor, labels: torch.Tensor, rank: int,
                  world: int) -> dict[str, int]:
    """One fp32 training step of the single-device network ``full`` as ``layout`` runs it, on this rank of
    ``world`` in the benchmark's process group: the bytes this rank handed to collectives, by exchange point.
    A data-parallel layout (this base case): DDP over every rank."""
    counted: dict[str, int] = {}
    model = counting_ddp(full, None, counted, "gradient all-reduce")
    F.cross_entropy(model(images), labels).backward()
    return counted


@measured_step.register
def _towers_step(layout: TowerLayout, full: nn.Module, images: torch.Tensor, labels: torch.Tensor, rank: int,
                 world: int) -> dict[str, int]:
    """The paper's towers in each pair of ranks, DDP across the pairs where there are several."""
    pair, replicas = tower_groups(rank, world)
    towers = TowerParallelAlexNet(full, rank=rank % TENSOR_PARALLEL, size=TENSOR_PARALLEL, group=pair)
    counted: dict[str, int] = {}
    model = towers if world == TENSOR_PARALLEL else counting_ddp(towers, replicas, counted,
                                                                 "gradient all-reduce across pairs")
    F.cross_entropy(model(images), labels).backward()
    return {**towers.log.bytes_by_point, **counted}


@measured_step.register
def _weird_trick_step(layout: WeirdTrickLayout, full: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      rank: int, world: int) -> dict[str, int]:
    """The conv layers data-parallel, the FC layers split by rows over every rank."""
    model = WeirdTrickAlexNet(full, rank=rank, size=world, group=dist.group.WORLD)
    F.cross_entropy(model(images), model.gather_labels(labels)).backward()
    model.sync_conv_gradients()
    return dict(model.log.bytes_by_point)


def _step(layout: str, batch_size: int, rank: int, world: int) -> dict[str, int]:
    """One training step of ``layout`` on this rank; the bytes it handed to collectives, by exchange point."""
    torch.manual_seed(rank)
    images, labels = torch.randn(batch_size, 3, SIDE, SIDE), torch.randint(0, CLASSES, (batch_size,))
    return measured_step(LAYOUTS[layout], build_model("paper", CLASSES), images, labels, rank, world)


def measure_communication(batch_size: int = 128, layouts: list[str] | None = None) -> CommunicationReport:
    """One fp32 training step of each layout in gloo processes; bytes per device (rank 0's)."""
    report = CommunicationReport(batch_size)
    for layout in layouts or list(LAYOUT_DEVICES):
        step = partial(_step, layout, batch_size)
        report.bytes_by_layout[layout] = run_in_processes(step, LAYOUT_DEVICES[layout])
    return report
