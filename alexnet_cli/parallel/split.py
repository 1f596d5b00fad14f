"""What every network split across ranks shares: its checkpoints are the single-device network's.

A split network (``TowerParallelAlexNet``, ``WeirdTrickAlexNet``) holds, for each parameter, either all
of it or rows [r·n/N, (r+1)·n/N) of the single-device parameter of the same name (``row_sizes``;
``shard_sizes`` says how many). Weights and the optimizer's momentum are joined into, and cut out of, the
single-device layout here, one way for every layout, so that any recipe can load, evaluate or resume what
another saved; ``SingleDeviceCheckpoints`` is where the layouts' Lightning strategies ask for that.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from alexnet_cli.models.parameters import ordered_names
from alexnet_cli.parallel.collectives import gather_rows
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.ranks import RunningLayout


def shard_sizes(total: int, parts: int) -> list[int]:
    """``torch.tensor_split`` sizes: the first ranks take the remainder."""
    return [len(chunk) for chunk in torch.arange(total).tensor_split(parts)]


class SplitModel(nn.Module):
    """A network of which this rank (``rank`` of ``size`` in ``group``) holds a part."""

    rank: int
    size: int
    group: object

    def row_sizes(self, name: str) -> list[int] | None:
        """Every rank's rows of parameter ``name`` if it is split, None if every rank holds all of it."""
        raise NotImplementedError

    def joined(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The single-device tensor of parameter ``name`` from every rank's part (collective if split)."""
        sizes = self.row_sizes(name)
        return (gather_rows(tensor, group=self.group, sizes=sizes) if sizes else tensor.detach()).cpu()

    def shard_of(self, name: str, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a single-device tensor of parameter ``name`` (all of it if not split)."""
        return full.tensor_split(self.size, dim=0)[self.rank] if self.row_sizes(name) else full

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The single-device state dict, assembled from every rank's part (collective)."""
        return {name: self.joined(name, tensor) for name, tensor in self.named_parameters()}

    def full_optimizer_state(self, state: dict) -> dict:
        """The optimizer's per-parameter buffers (momentum) in the single-device layout (collective).
        Parameter indices follow ``models.parameters.ordered_names`` in every layout."""
        names = self._optimizer_order()
        return {**state, "state": {index: {key: self.joined(names[index], value) if _per_element(value) else value
                                           for key, value in entry.items()}
                                   for index, entry in state["state"].items()}}

    def shard_optimizer_state(self, state: dict) -> dict:
        """This rank's part of a single-device optimizer state."""
        names = self._optimizer_order()
        return {**state, "state": {index: {key: self.shard_of(names[index], value).clone() if _per_element(value)
                                           else value for key, value in entry.items()}
                                   for index, entry in state["state"].items()}}

    def _optimizer_order(self) -> list[str]:
        return ordered_names([name for name, _ in self.named_parameters()])


def _per_element(value) -> bool:
    """A buffer with one entry per parameter element (momentum), not a scalar such as a step count."""
    return torch.is_tensor(value) and value.dim() > 0


class SingleDeviceCheckpoints(RunningLayout):
    """Checkpoints in the single-device layout for a Lightning strategy whose model is split across ranks (a
    ``SplitModel``), mixed in before Lightning's ``DDPStrategy``. Saving joins the shards
    (``lightning_module_state_dict``, ``optimizer_state``); resuming loads the weights into the single-device
    model first (Lightning restores modules before ``setup``, which then splits that model) and takes this
    rank's rows of the optimizer state (``load_optimizer_state_dict``). Every call is collective. Also the
    ``RunningLayout`` the LightningModule and the data ask during the run."""

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {f"model.{k}": v for k, v in self.lightning_module.model.full_state_dict().items()}

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        return self.lightning_module.model.full_optimizer_state(super().optimizer_state(optimizer))

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        model = self.lightning_module.model
        states = [model.shard_optimizer_state(state) for state in checkpoint["optimizer_states"]]
        super().load_optimizer_state_dict({**checkpoint, "optimizer_states": states})

    def __init__(self, layout: Layout, **ddp_options) -> None:
        super().__init__(**ddp_options)
        self.layout = layout  # the registry's entry: its data-parallel size and rank (RunningLayout)
