"""What every network split across ranks shares: its checkpoints are the single-device network's.

A split network (``TowerParallelAlexNet``, ``WeirdTrickAlexNet``) holds, for each parameter, either all
of it or rows [r·n/N, (r+1)·n/N) of the single-device parameter of the same name (``row_sizes``).
Weights and the optimizer's momentum are joined into, and cut out of, the single-device layout here,
one way for every layout, so that any recipe can load, evaluate or resume what another saved.
"""

import torch
from torch import nn

from alexnet_cli.models.parameters import ordered_names
from alexnet_cli.parallel.collectives import gather_rows


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
