"""A layout: one way to spread the network and its batches over devices, and what the tool asks of it.

Recipes name a layout in ``trainer.strategy``; ``parallel/layouts`` maps each name to one ``Layout``.
Before a run, ``train``, its dry run and ``benchmark comms`` ask the layout (its Lightning strategy, its
data-parallel size, its description, its model check); during the run the LightningModule and the data
ask the running strategy (``ranks.running_layout``), whose sizes come from the same functions.
"""

import inspect
from datetime import timedelta
from typing import Any

from lightning.pytorch.strategies import StrategyRegistry


class Layout:
    """What every layout answers. This base is data parallelism by one of Lightning's own strategies
    (``auto``: one device, ``ddp``, or any other strategy name Lightning knows), over every device."""

    compiles_model = True  # False: its forward exchanges activations, which torch.compile cannot capture
    collective_forward = False  # True: every forward is a collective, so all ranks must run as many batches
    kind = "data-parallel"  # the layout in a word, for messages

    def __init__(self, name: str, *, benchmark_devices: int | None = None, one_process: bool = False) -> None:
        self.name = name
        self.benchmark_devices = benchmark_devices  # the devices `benchmark comms` measures it on; None: not measured
        self.one_process = one_process  # on one device, it runs in the calling process (no launcher, no group)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def lightning_strategy(self, timeout: timedelta | None = None) -> Any:
        """The ``strategy`` argument of ``lightning.Trainer``: a name, or a ``Strategy`` object. ``timeout``: the
        process group's collective timeout, for a run of several processes: given to the strategy Lightning's
        registry builds for the name (``auto`` over several devices is its ``ddp``, as Lightning would pick)."""
        name = "ddp" if self.name == "auto" else self.name
        if timeout is None or name not in StrategyRegistry:
            return self.name
        entry = StrategyRegistry[name]
        if "timeout" not in inspect.signature(entry["strategy"].__init__).parameters:
            return self.name  # no process group of its own (single_device)
        return entry["strategy"](**entry["init_params"], timeout=timeout)

    def data_parallel_size(self, devices: int) -> int:
        """Into how many shards each batch of data is cut over ``devices`` devices: every device its own. The
        one source of that number: before a run (setup, dry run) and during it (``RunningLayout``)."""
        return max(1, devices)

    def data_parallel_rank(self, rank: int) -> int:
        """Which of those shards the process of global rank ``rank`` reads: its own."""
        return rank

    def describe(self, devices: int, batch_size: int) -> str:
        """How the devices share the network and the batch, in words (``train --dry-run``)."""
        if devices > 1:
            return f"data-parallel (DDP): {devices} copies of the network, gradients averaged"
        return "one device"

    def check_model(self, model) -> None:
        """Refuse a single-device network this layout cannot run: asked before any process starts."""

    def check_devices(self, devices: int, named: str | None = None) -> None:
        """Refuse a device count this layout cannot spread itself over (any count will do here): asked before
        any process starts, where the count is known (-1/"auto" on a machine without the devices is not).
        ``named``: the strategy as the recipe wrote it, for the message."""
