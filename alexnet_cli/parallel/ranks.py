"""Where this process stands among its peers while a run trains: its data-parallel shard, its process
groups, and the labels its class scores belong to.

``RunningLayout`` is what the LightningModule and the data ask of the layout during the run: this tool's
strategies (in ``parallel/towers`` and ``parallel/weird_trick``) answer for their layouts, and Lightning's
own strategies are plain data parallelism over every rank. ``running_layout(trainer)`` is the one place
that tells them apart.
"""

import socket

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


def free_port() -> int:
    """A free TCP port on loopback, for the rendezvous of processes this tool spawns itself."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Neither backend gives a lost peer its own exception type: gloo raises a plain RuntimeError (checked
# with torch 2.14) and NCCL a DistBackendError for every kind of failure. Only the text tells.
_LOST_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted",
                    "Broken pipe")


def lost_a_peer(exc: BaseException) -> bool:
    """Whether ``exc`` says another process of the run died (a killed or crashed rank)."""
    return any(sign in str(exc) for sign in _LOST_PEER_SIGNS)
