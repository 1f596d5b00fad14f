"""Real processes: the ddp recipe on two CPU ranks (gloo), through the command line."""

import csv
import json
import os
import signal

import pytest
import torch
from conftest import NARROW_FC, TWO_CPU_PROCESSES, run_alexnet


def test_ddp_on_two_gloo_ranks_runs_equal_steps_and_counts_each_val_image_once(prepared, tmp_path):
    out = tmp_path / "ddp"
    result = run_alexnet(
        "train", "--recipe", "ddp", "--data", prepared, "--out", out, "--quiet",
        *TWO_CPU_PROCESSES, *NARROW_FC, "--set", "data.batch_size=2", "--set", "data.normalize=channel",
        "--set", "trainer.max_epochs=1", "--set", "trainer.log_every_n_steps=1",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    # 23 training images → 11 per rank → 5 full batches of 2 on each rank (a rank with more would hang)
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert max(steps) == 4
    val = [r for r in rows if r.get("val/images")]
    assert float(val[-1]["val/images"]) == 12  # 12 val images over 2 ranks: 6 + 6, none twice
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 5
    # linear scaling: global batch 4 over a reference of 128
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 0.01 * 4 / 128


def test_a_killed_rank_makes_the_run_fail_fast_with_a_clear_message(prepared, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "alexnet_cli", "train", "--recipe", "ddp", "--data", str(prepared),
               "--out", str(out), "--quiet", "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2",
               "--set", "trainer.precision=32-true", "--set", "data.device=cpu", "--set", "data.batch_size=2",
               "--set", "data.num_threads=1",
        "--set", "data.py_workers=1", "--set", "data.normalize=channel", "--set", "trainer.max_epochs=100",
               *NARROW_FC]
    main = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    children = Path(f"/proc/{main.pid}/task/{main.pid}/children").read_text().split()
    assert children, "rank 1 should be a child process of rank 0"
    killed_at = time.monotonic()
    os.kill(int(children[0]), signal.SIGKILL)
    _, stderr = main.communicate(timeout=180)
    assert main.returncode != 0
    assert time.monotonic() - killed_at < 120
    assert "another training process stopped" in stderr
    assert "Traceback" not in stderr


# Two "nodes" of one CPU process each, as a multi-node recipe runs them: 23 training images → 5 steps of 2 a node.
TWO_NODES = ["--set", "trainer.accelerator=cpu", "--set", "trainer.num_nodes=2", "--set", "trainer.devices=1",
             "--set", "trainer.precision=32-true", "--set", "data.device=cpu", "--set", "data.batch_size=2",
             "--set", "data.num_threads=1", "--set", "data.py_workers=1", "--set", "data.normalize=channel",
             "--set", "trainer.log_every_n_steps=1", "--set", "trainer.collective_timeout_s=60", *NARROW_FC]


def _train_on_two_nodes(data, out, launch, *extra, logs=None):
    """``alexnet train --recipe ddp`` as two processes on 127.0.0.1, each started by ``launch(rank, port)``:
    (command prefix, environment); with ``logs`` (a folder), started with their stderr in files there and
    returned at once, else waited for."""
    import subprocess
    import sys

    from alexnet_cli.parallel.ranks import free_port

    port = free_port()
    train = ["-m", "alexnet_cli", "train", "--recipe", "ddp", "--data", str(data), "--out", str(out), "--quiet",
             *TWO_NODES, *extra]
    nodes = []
    for rank in (0, 1):
        prefix, env = launch(rank, port)
        output = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE) if logs is None else dict(
            stdout=subprocess.DEVNULL, stderr=open(logs / f"node{rank}.err", "w"))  # never a full pipe
        nodes.append(subprocess.Popen([sys.executable, *prefix, *train], env={**os.environ, **env}, text=True,
                                      **output))
    if logs is not None:
        return nodes
    try:  # a node that waits for a peer which never comes fails within the 60 s timeout, not at the test's
        results = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, stderr) in zip(nodes, results):
        assert node.returncode == 0, stderr[-3000:]
    return results


def _torchrun(rank, port):
    return (["-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1",
             "--master-addr=127.0.0.1", f"--master-port={port}", "--max-restarts=0"], {})


def _lightning_variables(rank, port):
    """Lightning's documented launch: each node told the main address, its NODE_RANK and the WORLD_SIZE; no RANK."""
    return [], {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank), "WORLD_SIZE": "2"}


def _slurm_variables(rank, port):
    """What srun sets for one task per node on two nodes (the address and port as a batch script exports them)."""
    return [], {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_PROCID": str(rank),
                "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank), "SLURM_JOB_NAME": "alexnet", "SLURM_JOB_ID": "4242",
                "SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _steps(out) -> list[tuple[int, float]]:
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    return [(int(r["step"]), float(r["train/loss"])) for r in rows if r.get("train/loss")]


@pytest.fixture(scope="module")
def torchrun_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("nodes") / "torchrun"
    _train_on_two_nodes(prepared, out, _torchrun, "--set", "trainer.max_epochs=1")
    return out


def test_ddp_as_two_nodes_under_torchrun_on_localhost(torchrun_run):
    steps = _steps(torchrun_run)
    assert [step for step, _ in steps] == [0, 1, 2, 3, 4]  # 5 steps of 2 on each "node", each logged once
    rows = list(csv.DictReader(open(torchrun_run / "metrics.csv")))
    assert float([r for r in rows if r.get("val/images")][-1]["val/images"]) == 12


@pytest.mark.parametrize("launch", [_lightning_variables, _slurm_variables], ids=["lightning-variables", "slurm"])
def test_every_multi_node_launch_trains_what_torchrun_does_on_the_packed_twin(launch, packed, torchrun_run,
                                                                             tmp_path):
    out = tmp_path / "run"
    results = _train_on_two_nodes(packed, out, launch, "--set", "trainer.max_epochs=1")
    assert _steps(out) == _steps(torchrun_run)  # same ranks, disjoint shards, same losses bit for bit, logged once
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert float([r for r in rows if r.get("val/images")][-1]["val/images"]) == 12  # 6 + 6, none twice
    assert json.loads((out / "run.json").read_text())["global_step"] == 5
    assert all("another alexnet train" not in stderr for _, stderr in results)  # node 1 took no lock of its own


def test_a_stopped_node_ends_the_run_within_the_collective_timeout_and_leaves_it_resumable(prepared, tmp_path):
    import time

    out = tmp_path / "hung"
    nodes = _train_on_two_nodes(prepared, out, _lightning_variables, "--set", "trainer.max_epochs=100",
                                "--set", "trainer.collective_timeout_s=10", "--set", "checkpoint.every_n_epochs=1",
                                logs=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (out / "checkpoints" / "last.ckpt").exists(), (tmp_path / "node0.err").read_text()[-3000:]
        os.kill(nodes[1].pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        nodes[0].wait(timeout=180)
        waited = time.monotonic() - stopped_at
    finally:
        for node in nodes:
            node.kill()
            node.wait()
    stderr = (tmp_path / "node0.err").read_text()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert nodes[0].returncode != 0 and "Traceback" not in stderr
    assert lines[-1].startswith("error: another training process stopped answering"), stderr[-2000:]
    assert 10 <= waited < 10 + 60
    from alexnet_cli.data.dataset_files import read_classes
    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.resume import check_resumable

    # the newest checkpoint is whole and resumable: what 'train --resume' checks first
    point = check_resumable(out / "checkpoints" / "last.ckpt", load_recipe(str(out / "recipe.yaml")),
                            read_classes(prepared))
    assert point.step >= 5 and point.epoch >= 1
