"""``TowerParallelAlexNet``: one of the paper's two towers, on one device (§3.2, Figure 2).

Each rank of a tensor-parallel group of two holds half of every layer's kernels
(conv1 48, conv2 128, conv3 192, conv4 192, conv5 128, fc6 2048, fc7 2048), read off the
single-device model's layers, and half
of fc8's rows (500 of 1000). The towers talk only where the paper's GPUs did:
conv3 reads both towers' conv2 maps, fc6 both towers' pool5 maps, fc7 all of fc6
and fc8 all of fc7; the class scores are gathered so both ranks compute the loss.
fc8 is split rather than replicated so that the two halves hold exactly the
60,965,224 parameters of the single-device model, with no weights duplicated.

Every shard is rows [r·n/2, (r+1)·n/2) of the single-device ``paper`` layer of the
same name, so the full state dict is the shards concatenated along dim 0: the
checkpoints of both layouts are the same file format.

``TowerLayout`` names the layouts built of it (``two-gpu``: one pair of towers; ``hybrid``: pairs
data-parallel), and ``TowerParallelStrategy`` runs them under Lightning: its DDP launcher with the towers
inside each pair of devices. Ranks 2k and 2k+1 form a tower pair (tensor parallel: they hold the two
halves of one network and see the same batch); ranks of the same tower index across pairs form a
data-parallel group, whose gradients DDP averages.
"""

from collections import OrderedDict
from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.lrn import is_channels_last
from alexnet_cli.models.paper import PaperAlexNet
from alexnet_cli.parallel.collectives import CommunicationLog, gather
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.split import SingleDeviceCheckpoints, SplitModel, shard_sizes

TENSOR_PARALLEL = 2  # the paper's two GPUs


class TowerParallelAlexNet(SplitModel):
    """This rank's tower of the paper's network; forward needs the other tower's rank running too."""

    def __init__(self, full: PaperAlexNet, *, rank: int, size: int, group) -> None:
        super().__init__()
        if size != TENSOR_PARALLEL:
            raise ValueError("the paper's split has exactly two towers")
        self.rank, self.size, self.group = rank, size, group
        self.log = CommunicationLog()
        self.num_classes = full.classifier.fc8.out_features
        self.fc8_sizes = shard_sizes(self.num_classes, size)
        # conv1-pool5 and fc6-fc8 as in the single-device model, names and order kept: conv3 and fc6-fc8 read
        # both towers (``forward`` gathers there)
        self.features = self._tower(full, "features")
        self.classifier = self._tower(full, "classifier")
        self.train(full.training)  # the mode of the network it splits, which its copied layers have

    def _tower(self, full: PaperAlexNet, block: str) -> nn.Sequential:
        """This tower's part of ``full``'s ``block``: each weighted layer's rows (``_shard``), every other layer
        as ``full`` has it, one tower's copy (LRN, pooling and dropout as built, the §3.3/§3.4 ablations too)."""
        return nn.Sequential(OrderedDict(
            (name, self._shard(layer) if isinstance(layer, (nn.Conv2d, nn.Linear))
             else full.tower_layer(f"{block}.{name}"))
            for name, layer in getattr(full, block).named_children()))

    def _shard(self, full_layer: nn.Conv2d | nn.Linear) -> nn.Module:
        """This tower's layer: rows [r·n/2, (r+1)·n/2) of the single-device layer, its shapes read off
        that slice (a grouped conv's slice reads only its own group's maps: an ungrouped conv per tower)."""
        weight = full_layer.weight.detach().tensor_split(self.size, dim=0)[self.rank]
        if isinstance(full_layer, nn.Linear):
            layer = nn.Linear(weight.shape[1], weight.shape[0])
        else:
            layer = nn.Conv2d(weight.shape[1], weight.shape[0], full_layer.kernel_size, full_layer.stride,
                              full_layer.padding)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(full_layer.bias.tensor_split(self.size, dim=0)[self.rank])
        if is_channels_last(full_layer.weight):  # model.channels_last: the memory format the network was built in
            layer.to(memory_format=torch.channels_last)
        return layer

    def _gather(self, x: torch.Tensor, point: str, sizes: list[int] | None = None, replicated: bool = False):
        sizes = sizes or [x.shape[1]] * self.size
        return gather(x, group=self.group, rank=self.rank, sizes=sizes, replicated=replicated, log=self.log,
                      point=point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, layer in self.features.named_children():
            x = layer(x)
            if name == "pool2":
                x = self._gather(x, "conv3 reads both towers' conv2")
        x = torch.flatten(self._gather(x, "fc6 reads both towers' pool5"), 1)
        for name, layer in self.classifier.named_children():
            x = layer(x)
            if name == "drop6":
                x = self._gather(x, "fc7 reads all of fc6")
            elif name == "drop7":
                x = self._gather(x, "fc8 reads all of fc7")
        return self._gather(x, "class scores to both ranks", self.fc8_sizes, replicated=True)

    def row_sizes(self, name: str) -> list[int]:
        """Per-rank rows of parameter ``name``: every one is split (all ranks hold the same shapes but fc8's)."""
        tensor = dict(self.named_parameters())[name]
        if name.startswith("classifier.fc8"):
            return self.fc8_sizes
        return [tensor.shape[0]] * self.size


def tower_pairs(devices: int) -> int:
    """The data-parallel size of the towers layouts: each pair of devices holds one network on one batch."""
    return max(1, devices // TENSOR_PARALLEL)


def tower_groups(rank: int, world: int, timeout: timedelta | None = None) -> tuple[object, object]:
    """(the pair of ``rank``: ranks 2k and 2k+1 hold one network; its replicas: the ranks of the same tower
    index across pairs, whose gradients are averaged). Every rank must call this, in the same order."""
    if world % TENSOR_PARALLEL:
        raise AlexnetError(f"the two-GPU split needs an even number of devices, not {world}")
    # Subgroups get torch's default timeout, not the world group's: each is given the run's.
    pairs = [dist.new_group([2 * k, 2 * k + 1], timeout=timeout) for k in range(world // TENSOR_PARALLEL)]
    replicas = [dist.new_group(list(range(tower, world, TENSOR_PARALLEL)), timeout=timeout)
                for tower in range(TENSOR_PARALLEL)]
    return pairs[rank // TENSOR_PARALLEL], replicas[rank % TENSOR_PARALLEL]


def check_two_towers(model: nn.Module) -> None:
    """Refuse a network the towers layouts cannot split."""
    if getattr(model, "towers", None) != TENSOR_PARALLEL:
        raise AlexnetError("the two-GPU split (trainer.strategy two-gpu or hybrid) needs model.arch=paper, the "
                           "two-tower net (paper-one-tower is the one-GPU net it was compared with)")


class TowerLayout(Layout):
    """The paper's towers inside each pair of devices (``two-gpu``: one pair), data-parallel across pairs
    (``hybrid``: 2×N devices)."""

    compiles_model = False  # its forward exchanges activations between the towers
    kind = "towers"

    def lightning_strategy(self, timeout: timedelta | None = None) -> "TowerParallelStrategy":
        return TowerParallelStrategy(layout=self, **({"timeout": timeout} if timeout is not None else {}))

    def data_parallel_size(self, devices: int) -> int:
        return tower_pairs(devices)

    def data_parallel_rank(self, rank: int) -> int:
        return rank // TENSOR_PARALLEL  # both towers of a pair read the same batch

    def describe(self, devices: int, batch_size: int) -> str:
        pairs = tower_pairs(devices)
        return (f"the paper's two-GPU split: {pairs} pair(s) of towers, each pair one network on one batch"
                + (f", data-parallel over the {pairs} pairs" if pairs > 1 else ""))

    def __init__(self, name: str, *, pairs: tuple[int, int | None], **options) -> None:
        super().__init__(name, **options)
        self.pairs = pairs  # (fewest, most) pairs of towers it runs; None: no limit

    def check_model(self, model) -> None:
        check_two_towers(model)

    def check_devices(self, devices: int, named: str | None = None) -> None:
        fewest, most = self.pairs
        if devices % TENSOR_PARALLEL or not fewest <= devices // TENSOR_PARALLEL <= (most or devices):
            raise AlexnetError(f"trainer.strategy={named or self.name} on {devices} device(s): two-gpu runs one pair "
                               "of towers on exactly 2 devices, hybrid 2 or more pairs (an even number of devices, "
                               "4 or more); set trainer.devices or trainer.strategy to match")


class TowerParallelStrategy(SingleDeviceCheckpoints, DDPStrategy):
    """Lightning's DDP with the paper's towers inside each pair of devices (``TowerLayout``), checkpoints in
    the single-device layout."""

    def setup_distributed(self) -> None:
        super().setup_distributed()
        self.tensor_parallel_group, self.data_parallel_group = tower_groups(self.global_rank, self.world_size,
                                                                            self._timeout)

    @property
    def tower_index(self) -> int:
        return self.global_rank % TENSOR_PARALLEL

    def setup(self, trainer) -> None:
        module = self.lightning_module
        if not isinstance(module.model, TowerParallelAlexNet):
            check_two_towers(module.model)
            module.model = TowerParallelAlexNet(module.model, rank=self.tower_index, size=TENSOR_PARALLEL,
                                                group=self.tensor_parallel_group)
        super().setup(trainer)

    def configure_ddp(self) -> None:
        if self.world_size == TENSOR_PARALLEL:
            return  # one pair: no parameter lives on two devices, nothing to all-reduce
        self._ddp_kwargs["process_group"] = self.data_parallel_group
        super().configure_ddp()
