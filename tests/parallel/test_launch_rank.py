"""A process's global rank before the Trainer exists, under each launcher, as Lightning will number it."""

import pytest

from alexnet_cli.parallel.ranks import launch_rank

LAUNCHERS = ("RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
             "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME", "SLURM_LOCALID",
             "LSB_JOBID", "JSM_NAMESPACE_RANK")


@pytest.fixture
def environment(monkeypatch):
    for name in LAUNCHERS:
        monkeypatch.delenv(name, raising=False)
    return lambda **values: [monkeypatch.setenv(key, str(value)) for key, value in values.items()]


@pytest.mark.parametrize(("variables", "devices_per_node", "rank"), [
    ({}, 4, 0),  # one process, nothing set
    ({"NODE_RANK": 1, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 1234, "WORLD_SIZE": 8}, 4, 4),  # Lightning, node 1
    ({"NODE_RANK": 1, "LOCAL_RANK": 3, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 1234}, 4, 7),  # its 4th process
    ({"SLURM_NTASKS": 8, "SLURM_PROCID": 5, "SLURM_LOCALID": 1, "SLURM_JOB_NAME": "train"}, 4, 5),  # srun
    # torchrun inside a SLURM job: every process of the node has the job step's SLURM_PROCID; RANK is its own
    ({"SLURM_NTASKS": 2, "SLURM_PROCID": 1, "SLURM_JOB_NAME": "train", "RANK": 6, "LOCAL_RANK": 2, "GROUP_RANK": 1,
      "WORLD_SIZE": 8, "LOCAL_WORLD_SIZE": 4, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 1234,
      "TORCHELASTIC_RUN_ID": "x"}, 4, 6),
])
def test_the_launch_rank_is_the_launchers_or_node_rank_times_devices_plus_local_rank(environment, variables,
                                                                                       devices_per_node, rank):
    environment(**variables)
    assert launch_rank(devices_per_node) == rank
