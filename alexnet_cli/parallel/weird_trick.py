"""``WeirdTrickAlexNet``: the 2014 sequel's layout (Krizhevsky, arXiv:1404.5997) on one rank of N.

The convolutional layers (~5 % of the parameters, ~95 % of the compute) run data-parallel:
every rank holds all of them and convolves its own batch. The fully connected layers (~95 % of
the parameters) run model-parallel: every rank holds rows [r·n/N, (r+1)·n/N) of each of them
(``torch.tensor_split``'s slices, uneven where N does not divide n). At the conv→FC boundary the
ranks all-gather their last conv activations, so each computes its slice of fc6 for the whole
N×B batch; each further FC layer reads all of the previous one (a gather of the slices), and the
class scores are gathered so that every rank computes the same loss over the N×B batch.

Gradients come back the way the activations went: a gather's backward sums the gradient over
the ranks and keeps this rank's part (for the boundary: a reduce-scatter of the conv activations'
gradient to the rank that produced them). The FC slices' gradients stay where they are; the conv
layers' gradients are summed over the ranks (``sync_conv_gradients``), because each rank's
gradient holds only its own images' share of the N×B batch's mean loss.

This is the all-gather form of the paper; its pipelined variant (one rank's batch at a time,
overlapping communication) is not implemented. ``WeirdTrickLayout`` names it (``weird-trick``) and
``WeirdTrickStrategy`` runs it under Lightning.
"""

from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from alexnet_cli.parallel.collectives import CommunicationLog, gather, gather_rows
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.split import SingleDeviceCheckpoints, SplitModel, shard_sizes


class WeirdTrickAlexNet(SplitModel):
    """One rank's part: all conv layers, and a row slice of every Linear layer of the classifier."""

    def __init__(self, full: nn.Module, *, rank: int, size: int, group) -> None:
        super().__init__()
        self.rank, self.size, self.group = rank, size, group
        self.log = CommunicationLog()
        self.features = full.features
        self.avgpool = getattr(full, "avgpool", nn.Identity())  # torchvision's (owt); the paper has none
        self.classifier = nn.Sequential()
        self.sizes: dict[str, list[int]] = {}  # a sliced layer's rows on each rank
        for name, layer in full.classifier.named_children():
            if isinstance(layer, nn.Linear):
                self.sizes[name] = shard_sizes(layer.out_features, size)
                layer = self._slice(layer, self.sizes[name][rank])
            self.classifier.add_module(name, layer)
        self.linear_names = list(self.sizes)
        self._batches: list[int] = []  # every rank's batch size in the last forward

    def _slice(self, layer: nn.Linear, rows: int) -> nn.Linear:
        part = nn.Linear(layer.in_features, rows, bias=layer.bias is not None)
        with torch.no_grad():
            for name, tensor in part.named_parameters():
                tensor.copy_(getattr(layer, name).tensor_split(self.size, dim=0)[self.rank])
        return part

    def _gather(self, x: torch.Tensor, point: str, sizes: list[int], dim: int, replicated: bool = False):
        return gather(x, group=self.group, rank=self.rank, sizes=sizes, dim=dim, replicated=replicated, log=self.log,
                      point=point)

    def batch_sizes(self, local: int, device: torch.device) -> list[int]:
        """Every rank's batch size. Training batches are equal on every rank (the shard plan drops the
        ragged end), so only evaluation pays for the exchange, whose read waits for the device."""
        if self.training:
            return [local] * self.size
        mine = torch.tensor([local], device=device)
        sizes = [torch.zeros_like(mine) for _ in range(self.size)]
        dist.all_gather(sizes, mine, group=self.group)
        return [int(s) for s in sizes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's images → the class scores of every rank's images, in rank order (on every rank)."""
        batches = self._batches = self.batch_sizes(len(x), x.device)
        h = torch.flatten(self.avgpool(self.features(x)), 1)
        h = self._gather(h, "fc6 reads every rank's conv activations", batches, dim=0)
        linear_seen = 0
        for name, layer in self.classifier.named_children():
            if isinstance(layer, nn.Linear) and linear_seen > 0:
                previous = self.linear_names[linear_seen - 1]
                h = self._gather(h, f"{name} reads all of {previous}", self.sizes[previous], dim=1)
            h = layer(h)
            linear_seen += isinstance(layer, nn.Linear)
        last = self.linear_names[-1]
        return self._gather(h, "class scores to every rank", self.sizes[last], dim=1, replicated=True)

    def gather_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Every rank's labels in rank order, for the scores the last forward returned (same batch sizes)."""
        return gather_rows(labels, group=self.group, sizes=self._batches)

    @torch.no_grad()
    def sync_conv_gradients(self) -> None:
        """Sum the conv layers' gradients over the ranks (each holds its own images' share)."""
        for parameter in self.features.parameters():
            if parameter.grad is not None:
                self.log.add("conv gradients all-reduce", parameter.grad)
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM, group=self.group)

    def row_sizes(self, name: str) -> list[int] | None:
        """Per-rank rows of parameter ``name`` if it is sliced (an FC layer's), else None."""
        layer = name.split(".")[1] if name.startswith("classifier.") else None
        return self.sizes.get(layer)


class WeirdTrickLayout(Layout):
    """The 2014 sequel's layout on every device: conv layers data-parallel, FC layers split by rows."""

    compiles_model = False  # its forward exchanges activations between the ranks
    collective_forward = True  # every forward gathers: all ranks must run the same number of batches
    kind = "weird-trick"

    def lightning_strategy(self, timeout: timedelta | None = None) -> "WeirdTrickStrategy":
        return WeirdTrickStrategy(layout=self, **({"timeout": timeout} if timeout is not None else {}))

    def describe(self, devices: int, batch_size: int) -> str:
        return (f"the 2014 layout: conv layers data-parallel over {devices} devices (each its own batch), every FC "
                f"layer split by rows {devices} ways over all {devices}×{batch_size} images")


class WeirdTrickStrategy(SingleDeviceCheckpoints, DDPStrategy):
    """The 2014 sequel's layout on every device: conv layers data-parallel, FC layers sliced by rows
    (``WeirdTrickAlexNet``). Not wrapped in DDP: the conv gradients are summed after each backward
    (``post_backward``), and each rank already holds the scores of every rank's images, so metrics are
    not reduced again."""

    def setup_distributed(self) -> None:
        super().setup_distributed()
        # Every rank scores the whole N×B batch: the metrics' "data-parallel group" is the rank alone.
        singles = [dist.new_group([rank], timeout=self._timeout) for rank in range(self.world_size)]
        self.data_parallel_group = singles[self.global_rank]

    def setup(self, trainer) -> None:
        module = self.lightning_module
        if not isinstance(module.model, WeirdTrickAlexNet):
            module.model = WeirdTrickAlexNet(module.model, rank=self.global_rank, size=self.world_size,
                                             group=dist.group.WORLD)
        super().setup(trainer)

    def configure_ddp(self) -> None:
        return  # no parameter is averaged by DDP: conv gradients are summed below, FC slices are local

    def post_backward(self, closure_loss) -> None:
        super().post_backward(closure_loss)
        self.lightning_module.model.sync_conv_gradients()  # each rank's holds only its own images' share

    def scored_labels(self, labels):
        return self.lightning_module.model.gather_labels(labels)  # the scores are every rank's images'
