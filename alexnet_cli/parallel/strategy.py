"""Lightning strategies for the layouts Lightning lacks: the paper's towers and the 2014 weird trick.

Both keep checkpoints in the single-device layout, so that any recipe can load, evaluate or resume
them (``SingleDeviceCheckpoints``): saving joins the shards (``lightning_module_state_dict``,
``optimizer_state``), resuming loads the weights into the single-device model first (Lightning restores
modules before ``setup``, which then splits that model) and takes this rank's rows of the optimizer
state (``load_optimizer_state_dict``); the conversions are the split model's (``split.SplitModel``).
Each is also the ``RunningLayout`` the LightningModule and the data ask during the run.

``TowerParallelStrategy``: Lightning's DDP launcher with the paper's towers inside each pair of devices.
Ranks 2k and 2k+1 form a tower pair (tensor parallel: they hold the two halves of
one network and see the same batch); ranks of the same tower index across pairs
form a data-parallel group, whose gradients DDP averages. Two devices is the
paper's ``two-gpu`` layout; 2×N devices is the ``hybrid`` one.
"""

from collections.abc import Mapping
from typing import Any

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.ranks import RunningLayout
from alexnet_cli.parallel.towers import (
    TENSOR_PARALLEL,
    TowerParallelAlexNet,
    check_two_towers,
    tower_groups,
)
from alexnet_cli.parallel.weird_trick import WeirdTrickAlexNet


class SingleDeviceCheckpoints(RunningLayout):
    """Checkpoints in the single-device layout for a strategy whose model is split across ranks (a
    ``SplitModel``). Every call is collective."""

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


class TowerParallelStrategy(SingleDeviceCheckpoints, DDPStrategy):

    def setup_distributed(self) -> None:
        super().setup_distributed()
        self.tensor_parallel_group, self.data_parallel_group = tower_groups(self.global_rank, self.world_size)

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


class WeirdTrickStrategy(SingleDeviceCheckpoints, DDPStrategy):
    """The 2014 sequel's layout on every device: conv layers data-parallel, FC layers sliced by rows
    (``WeirdTrickAlexNet``). Not wrapped in DDP: the conv gradients are summed after each backward
    (``post_backward``), and each rank already holds the scores of every rank's images, so metrics are
    not reduced again."""


    def setup_distributed(self) -> None:
        super().setup_distributed()
        # Every rank scores the whole N×B batch: the metrics' "data-parallel group" is the rank alone.
        singles = [dist.new_group([rank]) for rank in range(self.world_size)]
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
