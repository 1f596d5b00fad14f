"""The paper's two-GPU split against the single-device network, in real gloo processes."""

import csv
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import NARROW_FC, invoke_alexnet, run_alexnet, scratch_dir

from alexnet_cli.models import build_model
from alexnet_cli.parallel.ranks import free_port
from alexnet_cli.parallel.towers import TowerParallelAlexNet


def _split_worker(rank: int, port: int, results_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    full = build_model("paper", num_classes=10, dropout=0.0, init="paper")
    images, labels = torch.randn(3, 3, 227, 227) * 50, torch.tensor([1, 7, 3])
    towers = TowerParallelAlexNet(full, rank=rank, size=2, group=dist.group.WORLD)
    logits = towers(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {name: p.grad for name, p in towers.named_parameters()}
    gathered = {}
    for name, grad in grads.items():
        parts = [torch.empty_like(grad) if not name.startswith("classifier.fc8") else torch.empty(5, *grad.shape[1:])
                 for _ in range(2)]
        dist.all_gather(parts, grad)
        gathered[name] = torch.cat(parts)
    state = towers.full_state_dict()
    if rank == 0:
        torch.save((logits.detach(), loss.detach(), gathered, state, dict(towers.log.bytes_by_point)), results_file)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def split_results(tmp_path_factory):
    with scratch_dir(tmp_path_factory, "split") as folder:
        results_file = folder / "results.pt"
        mp.spawn(_split_worker, args=(free_port(), str(results_file)), nprocs=2, join=True)
        return torch.load(results_file, weights_only=True)


def _single_reference():
    torch.manual_seed(0)
    full = build_model("paper", num_classes=10, dropout=0.0, init="paper")
    images, labels = torch.randn(3, 3, 227, 227) * 50, torch.tensor([1, 7, 3])
    logits = full(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return full, logits.detach(), loss.detach()


def test_two_towers_give_the_single_devices_logits_loss_and_gradients(split_results):
    logits, loss, grads, _, _ = split_results
    full, expected_logits, expected_loss = _single_reference()
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for name, param in full.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_the_towers_together_are_the_papers_60965224_parameters(split_results):
    _, _, _, state, _ = split_results
    with torch.device("meta"):  # shapes only: no 61 M weights drawn
        full, thousand = build_model("paper", num_classes=10), build_model("paper")
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in full.state_dict().items()}
    assert sum(thousand.state_dict()[k].numel() for k in state) == 60_965_224


def test_towers_communicate_only_where_the_papers_gpus_did(split_results):
    *_, log = split_results
    points = {key.rsplit(" ", 1)[0] for key in log}
    assert points == {"conv3 reads both towers' conv2", "fc6 reads both towers' pool5", "fc7 reads all of fc6",
                      "fc8 reads all of fc7", "class scores to both ranks"}
    assert "class scores to both ranks backward" not in log  # replicated loss: no gradient exchange


def _train(recipe: str, data, out, devices: int, *extra: str):
    arguments = ("train", "--recipe", recipe, "--data", data, "--set", "trainer.accelerator=cpu",
                 "--set", f"trainer.devices={devices}", "--set", "trainer.max_steps=4",
                 "--set", "trainer.precision=32-true", "--set", "trainer.log_every_n_steps=1",
                 "--set", "trainer.limit_val_batches=0", "--set", "model.dropout=0", "--set", "data.device=cpu",
                 "--set", "data.batch_size=8", "--set", "data.py_workers=1", "--set", "data.num_threads=1",
                 "--out", out, "--quiet", *NARROW_FC, *extra)
    # Lightning starts the other ranks by re-running the command line: several devices need a process of their own
    return run_alexnet(*arguments, timeout=900) if devices > 1 else invoke_alexnet(*arguments)


@pytest.mark.parametrize("dry_run", [False, True], ids=["train", "dry-run"])
def test_the_split_refuses_the_one_tower_net_in_one_line_before_starting_its_processes(prepared, tmp_path, dry_run):
    arguments = ["train", "--recipe", "two-gpu", "--data", prepared, "--out", tmp_path / "run",
                 "--set", "trainer.accelerator=cpu", "--set", "data.device=cpu", "--set", "data.batch_size=4",
                 "--set", "model.arch=paper-one-tower"]
    # train in a process of its own: were the check late, Lightning would start rank 1 by re-running pytest
    result = invoke_alexnet(*arguments, "--dry-run") if dry_run else run_alexnet(*arguments)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "needs model.arch=paper" in result.stderr and not (tmp_path / "run").exists()


def _losses(out) -> list[float]:
    return [float(r["train/loss"]) for r in csv.DictReader(open(out / "metrics.csv")) if r.get("train/loss")]


@pytest.mark.parametrize("ablation", [[], ["--set", "model.lrn=false", "--set", "model.overlap_pool=false"]],
                         ids=["paper", "no-lrn-no-overlap"])
def test_two_gpu_recipe_reproduces_the_single_gpu_losses_step_by_step(prepared, tmp_path, ablation):
    single, split = tmp_path / "A", tmp_path / "B"
    for recipe, out, devices in (("single-gpu", single, 1), ("two-gpu", split, 2)):
        result = _train(recipe, prepared, out, devices, *ablation)
        assert result.returncode == 0, result.stderr[-3000:]
    a, b = _losses(single), _losses(split)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(x), (a, b)
    # the two-GPU checkpoint is a single-device checkpoint: same keys, same shapes, loadable
    from alexnet_cli import load_model

    model = load_model(split / "checkpoints" / "last.ckpt")
    assert model.features.conv1.weight.shape == (96, 3, 11, 11)


def test_hybrid_on_four_ranks_equals_ddp_over_the_single_device_model(prepared, tmp_path):
    common = ["--set", "trainer.accelerator=cpu", "--set", "trainer.max_steps=3", "--set", "trainer.precision=32-true",
              "--set", "trainer.log_every_n_steps=1", "--set", "trainer.limit_val_batches=0",
              "--set", "model.dropout=0", "--set", "data.device=cpu", "--set", "data.batch_size=2",
              "--set", "data.num_threads=1", "--set", "data.py_workers=1", "--quiet", *NARROW_FC]
    hybrid, ddp = tmp_path / "hybrid", tmp_path / "ddp"
    for recipe, out, devices in (("hybrid", hybrid, 4), ("ddp", ddp, 2)):
        result = run_alexnet("train", "--recipe", recipe, "--data", prepared, "--out", out,
                             "--set", f"trainer.devices={devices}", *common, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    a, b = _losses(hybrid), _losses(ddp)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-4 * abs(x), (a, b)
    weights_hybrid = torch.load(hybrid / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights_ddp = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in weights_ddp.items():
        torch.testing.assert_close(weights_hybrid[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_a_single_gpu_checkpoint_resumes_as_two_gpu_on_the_same_trajectory(prepared, tmp_path):
    straight, first = tmp_path / "straight", tmp_path / "first"
    assert _train("single-gpu", prepared, straight, 1).returncode == 0
    common = ["--set", "trainer.accelerator=cpu", "--set", "trainer.precision=32-true",
              "--set", "trainer.log_every_n_steps=1", "--set", "trainer.limit_val_batches=0",
              "--set", "model.dropout=0", "--set", "data.device=cpu", "--set", "data.batch_size=8",
              "--set", "data.py_workers=1", "--set", "data.num_threads=1", "--quiet", *NARROW_FC]
    # 23 images in batches of 8: one epoch is 2 steps; stop after one, resume for a second
    result = invoke_alexnet("train", "--recipe", "single-gpu", "--data", prepared, "--out", first,
                            "--set", "trainer.devices=1", "--set", "trainer.max_epochs=1", *common)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_alexnet("train", "--recipe", "two-gpu", "--data", prepared, "--resume", first,
                         "--set", "trainer.devices=2", "--set", "trainer.max_epochs=2", *common, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    expected, resumed = _losses(straight), _losses(first)
    assert len(resumed) == 4, "metrics.csv keeps the first run's rows"
    for x, y in zip(expected, resumed):  # steps 3 and 4 ran as two towers, resumed with sliced momentum
        assert abs(x - y) <= 1e-4 * abs(x), (expected, resumed)
