"""Real processes: the ddp recipe on two CPU ranks (gloo), through the command line."""

import csv

import torch

from conftest import run_alexnet


def test_ddp_on_two_gloo_ranks_runs_equal_steps_and_counts_each_val_image_once(prepared, tmp_path):
    out = tmp_path / "ddp"
    result = run_alexnet(
        "train", "--recipe", "ddp", "--data", prepared, "--out", out, "--quiet",
        "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2", "--set", "trainer.precision=32-true",
        "--set", "data.device=cpu", "--set", "data.batch_size=2", "--set", "data.num_threads=1",
        "--set", "data.normalize=channel", "--set", "trainer.max_epochs=1", "--set", "trainer.log_every_n_steps=1",
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
