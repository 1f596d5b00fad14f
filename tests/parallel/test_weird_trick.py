"""The 2014 sequel's layout in real gloo processes against the single-device network over the N×B batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import NARROW_FC, TWO_CPU_PROCESSES, invoke_alexnet, run_alexnet

from alexnet_cli.models import build_model
from alexnet_cli.parallel.layouts import LAYOUTS
from alexnet_cli.parallel.ranks import free_port
from alexnet_cli.parallel.weird_trick import WeirdTrickAlexNet
from alexnet_cli.recipes import OptimConfig
from alexnet_cli.training.module import AlexNetModule

BATCH, STEPS, LR = 2, 3, 0.01


def _data(arch: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's N×B batch (N = 2); rank r takes rows [r·B, (r+1)·B)."""
    generator = torch.Generator().manual_seed(100 + step)
    side = 227 if arch == "paper" else 224
    return torch.randn(2 * BATCH, 3, side, side, generator=generator) * 50, torch.randint(0, 7, (2 * BATCH,),
                                                                                          generator=generator)


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    init = "paper" if arch == "paper" else "builder"
    return build_model(arch, num_classes=7, dropout=0.0, init=init)  # 7 classes: fc8 splits 4 + 3


def _worker(rank: int, port: int, arch: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = WeirdTrickAlexNet(_model(arch), rank=rank, size=2, group=dist.group.WORLD)
    # The conv-gradient sum runs where Lightning runs it in a training run: the strategy's post_backward hook.
    strategy = LAYOUTS["weird-trick"].lightning_strategy()
    strategy.connect(AlexNetModule(model, OptimConfig(), num_classes=7, meta={}))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    losses, first_grads = [], None
    for step in range(STEPS):
        images, labels = _data(arch, step)
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        logits = model(images[mine])
        loss = F.cross_entropy(logits, model.gather_labels(labels[mine]))
        optimizer.zero_grad()
        loss.backward()
        strategy.post_backward(loss)
        if first_grads is None:
            first_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    sliced = {name: [torch.empty(0)] * 2 for name in first_grads}
    for name, grad in first_grads.items():
        dist.all_gather_object(sliced[name], grad)
    state = model.full_state_dict()
    if rank == 0:
        torch.save((losses, sliced, state, dict(model.log.bytes_by_point)), out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["paper", "owt"])
def test_two_ranks_train_exactly_as_one_device_on_their_joined_batch(arch, tmp_path):
    out = tmp_path / "results.pt"
    mp.spawn(_worker, args=(free_port(), arch, str(out)), nprocs=2, join=True)
    losses, sliced, state, exchanged = torch.load(out, weights_only=True)

    single = _model(arch)
    optimizer = torch.optim.SGD(single.parameters(), lr=LR, momentum=0.9)
    reference_losses, first_grads = [], None
    for step in range(STEPS):
        images, labels = _data(arch, step)
        loss = F.cross_entropy(single(images), labels)
        optimizer.zero_grad()
        loss.backward()
        if first_grads is None:
            first_grads = {name: p.grad.clone() for name, p in single.named_parameters()}
        optimizer.step()
        reference_losses.append(loss.item())

    assert losses == pytest.approx(reference_losses, rel=1e-4)  # step by step
    for name, grad in first_grads.items():
        rank0, rank1 = sliced[name]
        if name.startswith("classifier."):  # each rank holds its rows
            torch.testing.assert_close(torch.cat([rank0, rank1]), grad, rtol=1e-4, atol=1e-6)
        else:  # conv layers: the sum over ranks, on both
            torch.testing.assert_close(rank0, grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(rank1, grad, rtol=1e-4, atol=1e-6)
    assert sliced["classifier.fc8.weight" if arch == "paper" else "classifier.6.weight"][1].shape[0] == 3  # uneven
    for name, tensor in single.state_dict().items():  # after the steps: the single-device layout, equal
        torch.testing.assert_close(state[name], tensor, rtol=1e-4, atol=1e-5)
    assert "fc6 reads every rank's conv activations forward" in exchanged


def test_the_recipe_trains_on_two_gloo_ranks_and_its_checkpoint_evaluates_on_one(prepared, tmp_path):
    import csv
    import json


    out = tmp_path / "run"
    result = run_alexnet(
        "train", "--recipe", "weird-trick", "--data", prepared, "--out", out, "--quiet",
        *TWO_CPU_PROCESSES, *NARROW_FC, "--set", "trainer.max_epochs=1", "--set", "trainer.log_every_n_steps=1",
        "--set", "data.batch_size=5",  # 12 val images: 6 per rank, batches of 5 → 2 on each (none of 5 + 1)
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert max(int(r["step"]) for r in rows if r.get("train/loss")) == 1  # 23 images → 11 per rank → 2 steps of 5
    [val] = [r for r in rows if r.get("val/images")]
    assert float(val["val/images"]) == 12  # every val image once, though every rank scored all of them
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert state["state_dict"]["model.classifier.6.weight"].shape == (4, 64)  # the single-device layout
    momentum = state["optimizer_states"][0]["state"]
    assert any(entry["momentum_buffer"].shape == (64, 9216) for entry in momentum.values())  # fc6, joined
    for devices in ("1", "2"):
        report = tmp_path / f"eval{devices}.json"
        evaluated = invoke_alexnet("eval", "--checkpoint", out / "checkpoints" / "last.ckpt", "--data", prepared,
                                   "--center-crop", "--devices", devices, "--quiet", "--json", report)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        # the training run's last validation, made by the split network, is the single-device model's
        assert json.loads(report.read_text())["top1"] == pytest.approx(float(val["val/top1"]), abs=1e-6)


def test_evaluation_batches_are_chosen_so_every_rank_runs_as_many():
    from alexnet_cli.data.sampling import ShardPlan, equal_steps_batch_size
    from alexnet_cli.errors import AlexnetError

    # 13 images on 2 ranks: 7 and 6; batches of 6 would give 2 and 1 batches (a gather waiting forever)
    assert equal_steps_batch_size(13, 2, 6) == 7
    assert equal_steps_batch_size(12, 2, 5) == 5  # already equal: unchanged
    for samples, shards, batch in [(13, 2, 6), (50_000, 8, 128), (1001, 3, 4), (9, 4, 2)]:
        chosen = equal_steps_batch_size(samples, shards, batch)
        steps = {ShardPlan(samples, chosen, r, shards, train=False).steps_per_epoch for r in range(shards)}
        assert len(steps) == 1 and chosen >= batch
    with pytest.raises(AlexnetError, match="3 validation images cannot give each of 4 devices one"):
        equal_steps_batch_size(3, 4, 2)


def test_sigterm_saves_a_weird_trick_run_that_resumes_to_its_end(prepared, tmp_path):
    import signal
    import subprocess
    import sys
    import time


    out = tmp_path / "run"
    common = ["--data", str(prepared), "--quiet", *TWO_CPU_PROCESSES, *NARROW_FC, "--set", "data.batch_size=4",
              "--set", "trainer.limit_val_batches=0",
              "--set", "checkpoint.every_minutes=null", "--set", "checkpoint.every_n_train_steps=1",
              "--set", "trainer.log_every_n_steps=1",  # several ranks agree on a stop at logging steps
              "--set", "trainer.max_epochs=4"]  # 23 images → 11 per rank → 2 steps of 4 an epoch, 8 in all
    process = subprocess.Popen([sys.executable, "-m", "alexnet_cli", "train", "--recipe", "weird-trick",
                                "--out", str(out), *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    stopped = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["global_step"]
    assert 1 <= stopped < 8 and "SIGTERM received" in stderr
    result = run_alexnet("train", "--recipe", "weird-trick", "--resume", out, *common, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert final["global_step"] == 8 and final["state_dict"]["model.classifier.6.weight"].shape == (4, 64)
    # the checkpoint is in the single-device layout: it resumes on one device, sliced momentum joined
    one_device = [*common, "--set", "trainer.devices=1", "--set", "trainer.strategy=auto", "--set",
                  "trainer.max_epochs=5"]
    result = invoke_alexnet("train", "--recipe", "weird-trick", "--resume", out, *one_device)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8 + 5  # 23 // 4 a step
