"""Where this process stands among its peers: its data-parallel shard and process group.

Under DDP the data-parallel rank is the global rank; under the two-GPU split both
towers of a pair share one (``TowerParallelStrategy.data_parallel_shard``). Every part
that shards data or reduces metrics asks here, so the two cases cannot drift apart.
"""

import socket


def data_parallel_shard(trainer) -> tuple[int, int]:
    """(data-parallel rank, data-parallel size); (0, 1) without a trainer."""
    if trainer is None:
        return 0, 1
    strategy = trainer.strategy
    if hasattr(strategy, "data_parallel_shard"):
        return strategy.data_parallel_shard()
    return trainer.global_rank, trainer.world_size


def data_parallel_group(trainer):
    """The process group over which data-parallel ranks reduce (None: the whole world)."""
    return getattr(trainer.strategy, "data_parallel_group", None)


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
