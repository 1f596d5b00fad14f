"""Real processes: the ddp recipe on two CPU ranks (gloo), through the command line."""

import csv
import os
import signal

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


def test_ddp_as_two_nodes_under_torchrun_on_localhost(prepared, tmp_path):
    import subprocess
    import sys

    from alexnet_cli.parallel.ranks import free_port

    port = free_port()
    out = tmp_path / "nodes"
    train = ["-m", "alexnet_cli", "train", "--recipe", "ddp", "--data", str(prepared), "--out", str(out), "--quiet",
             "--set", "trainer.accelerator=cpu", "--set", "trainer.num_nodes=2", "--set", "trainer.devices=1",
             "--set", "trainer.precision=32-true", "--set", "data.device=cpu", "--set", "data.batch_size=2",
             "--set", "data.num_threads=1",
        "--set", "data.py_workers=1", "--set", "data.normalize=channel", "--set", "trainer.max_epochs=1",
             "--set", "trainer.log_every_n_steps=1", *NARROW_FC]
    nodes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                          "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
                          "--max-restarts=0", *train], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, results):
        assert node.returncode == 0, stderr[-3000:]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert max(int(r["step"]) for r in rows if r.get("train/loss")) == 4  # 5 steps of 2 on each "node"
    assert float([r for r in rows if r.get("val/images")][-1]["val/images"]) == 12
