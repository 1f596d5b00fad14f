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
"""

from collections import OrderedDict

import torch
from torch import nn

from alexnet_cli.models.paper import PaperAlexNet, paper_lrn
from alexnet_cli.parallel.collectives import CommunicationLog, gather, gather_rows


def shard_sizes(total: int, parts: int) -> list[int]:
    """``torch.tensor_split`` sizes: the first ranks take the remainder."""
    return [len(chunk) for chunk in torch.arange(total).tensor_split(parts)]


class TowerParallelAlexNet(nn.Module):
    """This rank's tower of the paper's network; forward needs the other tower's rank running too."""

    def __init__(self, full: PaperAlexNet, *, rank: int, size: int, group) -> None:
        super().__init__()
        if size != 2:
            raise ValueError("the paper's split has exactly two towers")
        self.rank, self.size, self.group = rank, size, group
        self.log = CommunicationLog()
        f, c = full.features, full.classifier
        self.num_classes = c.fc8.out_features

        def norm() -> nn.Module:  # each tower normalises its own maps, or none does (the §3.3 ablation)
            return paper_lrn(groups=1, impl=f.norm1.impl) if full.lrn else nn.Identity()  # model.lrn_impl kept

        def pool() -> nn.MaxPool2d:  # as the single-device model pools (the §3.4 ablation included)
            return nn.MaxPool2d(f.pool1.kernel_size, f.pool1.stride)

        self.features = nn.Sequential(OrderedDict(
            conv1=self._shard(f.conv1), relu1=nn.ReLU(inplace=True), norm1=norm(), pool1=pool(),
            conv2=self._shard(f.conv2), relu2=nn.ReLU(inplace=True), norm2=norm(), pool2=pool(),
            conv3=self._shard(f.conv3), relu3=nn.ReLU(inplace=True),  # reads both towers
            conv4=self._shard(f.conv4), relu4=nn.ReLU(inplace=True),
            conv5=self._shard(f.conv5), relu5=nn.ReLU(inplace=True), pool5=pool(),
        ))
        dropout = c.drop6.p
        self.fc8_sizes = shard_sizes(self.num_classes, size)
        self.classifier = nn.Sequential(OrderedDict(
            fc6=self._shard(c.fc6), relu6=nn.ReLU(inplace=True), drop6=nn.Dropout(dropout),
            fc7=self._shard(c.fc7), relu7=nn.ReLU(inplace=True), drop7=nn.Dropout(dropout),
            fc8=self._shard(c.fc8),
        ))

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
        """Per-rank rows of parameter ``name`` (all ranks hold the same shapes but fc8's)."""
        tensor = dict(self.named_parameters())[name]
        if name.startswith("classifier.fc8"):
            return self.fc8_sizes
        return [tensor.shape[0]] * self.size

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The single-device ``paper`` state dict, assembled from both towers (collective)."""
        return {name: gather_rows(tensor, group=self.group, sizes=self.row_sizes(name)).cpu()
                for name, tensor in self.named_parameters()}

    def shard_of(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a single-device tensor."""
        return full.tensor_split(self.size, dim=0)[self.rank]


def _parameter_names(model: nn.Module) -> list[str]:
    """The optimizer's order of the parameters (see ``optimizer.parameter_groups``)."""
    from alexnet_cli.training.optimizer import ordered_names

    return ordered_names([name for name, _ in model.named_parameters()])


def full_optimizer_state(towers: TowerParallelAlexNet, state: dict) -> dict:
    """Momentum buffers of both towers joined into the single-device layout (collective).

    The optimizer's parameter indices follow the same order in both layouts (weights, then
    biases, each in ``named_parameters()`` order), so a state saved here resumes a single-device
    run and back.
    """
    names = _parameter_names(towers)
    joined = {}
    for index, entry in state["state"].items():
        sizes = towers.row_sizes(names[index])
        joined[index] = {key: gather_rows(value, group=towers.group, sizes=sizes).cpu()
                         if torch.is_tensor(value) and value.dim() > 0 else value for key, value in entry.items()}
    return {**state, "state": joined}


def shard_optimizer_state(towers: TowerParallelAlexNet, state: dict) -> dict:
    """This tower's rows of a single-device optimizer state."""
    sharded = {}
    for index, entry in state["state"].items():
        sharded[index] = {key: towers.shard_of(value).clone() if torch.is_tensor(value) and value.dim() > 0
                          else value for key, value in entry.items()}
    return {**state, "state": sharded}
