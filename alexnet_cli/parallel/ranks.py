"""Where this process stands among its peers while a run trains: its data-parallel shard, its process
groups, and the labels its class scores belong to.

``RunningLayout`` is what the LightningModule and the data ask of the layout during the run: this tool's
strategies (in ``parallel/towers`` and ``parallel/weird_trick``) answer for their layouts, and Lightning's
own strategies are plain data parallelism over every rank. ``running_layout(trainer)`` is the one place
that tells them apart.
"""

import os
import socket

from lightning.fabric.plugins.environments import (
    LightningEnvironment,
    LSFEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from alexnet_cli.data.sampling import trainer_rank
from alexnet_cli.parallel.layout import Layout


class RunningLayout:
    """Plain data parallelism: every rank a whole network and its own shard of the data. ``layout``: the
    registry's entry the run was built from, which says how its ranks shard the data."""

    layout: Layout
    global_rank: int
    world_size: int
    data_parallel_group = None  # the process group over which metrics are reduced (None: the whole world)
    tensor_parallel_group = None  # the ranks holding parts of one network, whose gradient norms add up

    def data_parallel_shard(self) -> tuple[int, int]:
        """(data-parallel rank, data-parallel size), as the layout says before the run too."""
        return self.layout.data_parallel_rank(self.global_rank), self.layout.data_parallel_size(self.world_size)

    def scored_labels(self, labels):
        """The labels of the class scores the last forward returned on this rank: its own batch's."""
        return labels


class _LightningDataParallel(RunningLayout):
    """One of Lightning's own strategies (or no trainer: one process)."""

    layout = Layout("ddp")

    def __init__(self, trainer) -> None:
        self.global_rank, self.world_size = trainer_rank(trainer)


def running_layout(trainer) -> RunningLayout:
    """The layout ``trainer`` runs: its strategy if it is one of this tool's, else Lightning's data parallelism
    (also without a trainer: one process)."""
    strategy = trainer.strategy if trainer is not None else None
    return strategy if isinstance(strategy, RunningLayout) else _LightningDataParallel(trainer)


def data_parallel_shard(trainer) -> tuple[int, int]:
    """(data-parallel rank, data-parallel size); (0, 1) without a trainer."""
    return running_layout(trainer).data_parallel_shard()


# Cluster environments in the order Lightning 2.6 tries them (torchrun first: it may run inside a SLURM job, where
# every process of a node shares one SLURM_PROCID), and the variable holding the global rank in each.
_LAUNCHER_RANKS = ((TorchElasticEnvironment, "RANK"), (SLURMEnvironment, "SLURM_PROCID"),
                   (LSFEnvironment, "JSM_NAMESPACE_RANK"))


def launch_rank(devices_per_node: int) -> int:
    """This process's global rank before the Trainer exists, as Lightning's cluster environment will number it:
    the launcher's (SLURM_PROCID under srun, RANK under torchrun, LSF's), else Lightning's own launch, where each node
    is told its NODE_RANK and Lightning starts one process per device (LOCAL_RANK set in those it starts).

    Lightning's ``rank_zero_only.rank``, set at import, reads RANK, LOCAL_RANK and SLURM_PROCID only: under its
    own multi-node launch it says 0 on every node until the Trainer has set the strategy up."""
    for environment, variable in _LAUNCHER_RANKS:
        if environment.detect():
            return int(os.environ[variable])  # (building the environment would also check its other variables)
    lightning = LightningEnvironment()
    return lightning.node_rank() * devices_per_node + lightning.local_rank()


def free_port() -> int:
    """A free TCP port on loopback, for the rendezvous of processes this tool spawns itself."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
