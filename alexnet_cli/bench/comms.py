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

from alexnet_cli.models import ARCHS
from alexnet_cli.parallel.layouts import LAYOUTS, benchmarked_layouts
from alexnet_cli.parallel.spawn import run_in_processes

LAYOUT_DEVICES = benchmarked_layouts()
CLASSES = 1000  # ImageNet's
SIDE = ARCHS["paper"].input_size


@dataclass
class CommunicationReport:
    batch_size: int
    bytes_by_layout: dict[str, dict[str, int]] = field(default_factory=dict)  # layout → exchange point → bytes

    def total(self, layout: str) -> int:
        return sum(self.bytes_by_layout[layout].values())


def _step(layout: str, batch_size: int, rank: int, world: int) -> dict[str, int]:
    """One training step of ``layout`` on this rank; the bytes it handed to collectives, by exchange point."""
    from alexnet_cli.models import build_model

    torch.manual_seed(rank)
    images, labels = torch.randn(batch_size, 3, SIDE, SIDE), torch.randint(0, CLASSES, (batch_size,))
    return LAYOUTS[layout].measured_step(build_model("paper", CLASSES), images, labels, rank, world)


def measure_communication(batch_size: int = 128, layouts: list[str] | None = None) -> CommunicationReport:
    """One fp32 training step of each layout in gloo processes; bytes per device (rank 0's)."""
    report = CommunicationReport(batch_size)
    for layout in layouts or list(LAYOUT_DEVICES):
        step = partial(_step, layout, batch_size)
        report.bytes_by_layout[layout] = run_in_processes(step, LAYOUT_DEVICES[layout])
    return report
