"""The 2014 sequel's layout in real gloo processes against the single-device network over the N×B batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from alexnet_cli.models import build_model
from alexnet_cli.parallel.layout import free_port
from alexnet_cli.parallel.weird_trick import WeirdTrickAlexNet

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
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    losses, first_grads = [], None
    for step in range(STEPS):
        images, labels = _data(arch, step)
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        logits = model(images[mine])
        loss = F.cross_entropy(logits, model.gather_labels(labels[mine]))
        optimizer.zero_grad()
        loss.backward()
        model.sync_conv_gradients()
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
