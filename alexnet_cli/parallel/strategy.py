"""Lightning strategies for the layouts Lightning lacks: the paper's towers and the 2014 weird trick.

Both keep checkpoints in the single-device layout, so that any recipe can load, evaluate or resume
them, and this module is where that conversion lives (``SingleDeviceCheckpoints``): saving joins the
shards (``lightning_module_state_dict``, ``optimizer_state``), resuming loads the weights into the
single-device model first (Lightning restores modules before ``setup``, which then splits that model)
and takes this rank's rows of the optimizer state (``load_optimizer_state_dict``).

``TowerParallelStrategy``: Lightning's DDP launcher with the paper's towers inside each pair of devices.
Ranks 2k and 2k+1 form a tower pair (tensor parallel: they hold the two halves of
one network and see the same batch); ranks of the same tower index across pairs
form a data-parallel group, whose gradients DDP averages. Two devices is the
paper's ``two-gpu`` layout; 2×N devices is the ``hybrid`` one.
"""

from typing import Any, Callable, Mapping

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.towers import TowerParallelAlexNet, full_optimizer_state, shard_optimizer_state
from alexnet_cli.parallel.weird_trick import (
    WeirdTrickAlexNet,
    full_weird_trick_optimizer_state,
    shard_weird_trick_optimizer_state,
)

TENSOR_PARALLEL = 2  # the paper's two GPUs


class SingleDeviceCheckpoints:
    """Checkpoints in the single-device layout for a strategy whose model is split across ranks (a model
    with ``full_state_dict()``); ``join``/``split`` convert one optimizer state. Every call is collective."""

    # Its forward exchanges activations between ranks: not something torch.compile captures (model.compile).
    compiles_model = False
    # (split model, optimizer state) -> optimizer state, set by each strategy
    join_optimizer_state: Callable[[Any, dict], dict]
    split_optimizer_state: Callable[[Any, dict], dict]

    @staticmethod
    def check_model(model) -> None:
        """Refuse a single-device network this layout cannot split: ``train`` asks before any process starts."""

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {f"model.{k}": v for k, v in self.lightning_module.model.full_state_dict().items()}

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        return self.join_optimizer_state(self.lightning_module.model, super().optimizer_state(optimizer))

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        model = self.lightning_module.model
        states = [self.split_optimizer_state(model, state) for state in checkpoint["optimizer_states"]]
        super().load_optimizer_state_dict({**checkpoint, "optimizer_states": states})


class TowerParallelStrategy(SingleDeviceCheckpoints, DDPStrategy):
    strategy_name = "towers"
    join_optimizer_state = staticmethod(full_optimizer_state)
    split_optimizer_state = staticmethod(shard_optimizer_state)

    @staticmethod
    def check_model(model) -> None:
        if getattr(model, "towers", None) != TENSOR_PARALLEL:
            raise AlexnetError("the two-GPU split (trainer.strategy=towers) needs model.arch=paper, the "
                               "two-tower net (paper-one-tower is the one-GPU net it was compared with)")

    def setup_distributed(self) -> None:
        super().setup_distributed()
        world = self.world_size
        if world % TENSOR_PARALLEL:
            raise AlexnetError(f"the two-GPU split needs an even number of devices, not {world}")
        # Every rank must create every group, in the same order.
        pairs = [dist.new_group([2 * k, 2 * k + 1]) for k in range(world // 2)]
        replicas = [dist.new_group(list(range(tower, world, 2))) for tower in range(TENSOR_PARALLEL)]
        self.tensor_parallel_group = pairs[self.global_rank // 2]
        self.data_parallel_group = replicas[self.global_rank % 2]

    @property
    def tower_index(self) -> int:
        return self.global_rank % TENSOR_PARALLEL

    def data_parallel_shard(self) -> tuple[int, int]:
        """(data-parallel rank, data-parallel size): both towers of a pair read the same batch."""
        return self.global_rank // TENSOR_PARALLEL, self.world_size // TENSOR_PARALLEL

    def setup(self, trainer) -> None:
        module = self.lightning_module
        if not isinstance(module.model, TowerParallelAlexNet):
            self.check_model(module.model)
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
    (``WeirdTrickAlexNet``). Not wrapped in DDP: the model sums its conv gradients itself, and each
    rank already holds the scores of every rank's images, so metrics are not reduced again."""

    strategy_name = "weird-trick"
    join_optimizer_state = staticmethod(full_weird_trick_optimizer_state)
    split_optimizer_state = staticmethod(shard_weird_trick_optimizer_state)
    collective_forward = True  # every forward gathers: all ranks must run the same number of batches

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
        return  # no parameter is averaged by DDP: conv gradients are summed by the model, FC slices are local
