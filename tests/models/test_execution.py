"""The speed switches change how the network runs, never what it computes or what it saves."""

import copy

import torch
import torch.nn.functional as F

from alexnet_cli.models import build_model
from alexnet_cli.models.execution import (
    CompileOptions,
    SplitGroupConv2d,
    apply_execution,
    compile_in_place,
    match_state_layouts,
)
from alexnet_cli.models.lrn import closed_form_lrn
from alexnet_cli.recipes import OptimConfig
from alexnet_cli.training.optimizer import sgd


def _paper(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("paper", 10, 0.0, init="kaiming", fc_width=32)


def _batch(size: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 227, 227, generator=generator), torch.arange(size) % 10


def _train(model, steps: int, optimizer=None):
    images, labels = _batch()
    optimizer = optimizer or sgd(model, OptimConfig(lr=0.01), 0.01)
    for _ in range(steps):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model(images).detach(), optimizer


def test_split_groups_runs_each_tower_as_its_own_convolution_with_the_same_numbers_and_keys():
    grouped = _paper()
    split = apply_execution(copy.deepcopy(grouped), split_groups=True)
    assert [n for n, m in split.named_modules() if isinstance(m, SplitGroupConv2d)] == [
        "features.conv2", "features.conv4", "features.conv5"]
    assert list(split.state_dict()) == list(grouped.state_dict())
    images, labels = _batch()
    for model in (grouped, split):
        F.cross_entropy(model(images), labels).backward()
    torch.testing.assert_close(split(images), grouped(images), rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(grouped.named_parameters(), split.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_channels_last_trains_to_the_same_weights_and_saves_the_same_state_dict():
    plain = _paper()
    nhwc = apply_execution(copy.deepcopy(plain), channels_last=True, lrn_impl="closed-form")
    assert nhwc.features.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    logits_plain, _ = _train(plain, 1)
    logits_nhwc, _ = _train(nhwc, 1)
    torch.testing.assert_close(logits_nhwc, logits_plain, rtol=1e-4, atol=1e-4)
    restored = _paper(seed=5)
    restored.load_state_dict(nhwc.state_dict())  # a channels-last run's checkpoint loads into a plain model
    torch.testing.assert_close(restored(_batch()[0]), logits_nhwc, rtol=1e-4, atol=1e-4)


def test_a_resumed_momentum_takes_its_channels_last_weights_layout():
    """A resume loads momentum contiguous; the fused SGD walks weight, gradient and momentum as flat memory."""
    reference = _paper()
    _, optimizer = _train(reference, 1)
    saved_weights, saved_state = copy.deepcopy(reference.state_dict()), copy.deepcopy(optimizer.state_dict())
    logits_after, _ = _train(reference, 1, optimizer)

    resumed = apply_execution(_paper(seed=9), channels_last=True)
    resumed.load_state_dict(saved_weights)
    optimizer = sgd(resumed, OptimConfig(lr=0.01), 0.01)
    optimizer.load_state_dict(saved_state)
    assert match_state_layouts(optimizer) == 5  # the five conv weights' momentum
    logits_resumed, _ = _train(resumed, 1, optimizer)
    torch.testing.assert_close(logits_resumed, logits_after, rtol=1e-4, atol=1e-4)


def test_a_compiled_step_equals_an_eager_one_after_three_steps():
    eager = _paper()
    compiled = apply_execution(copy.deepcopy(eager), lrn_impl="closed-form")
    compile_in_place(compiled, CompileOptions(backend="aot_eager"))  # the graph capture, without codegen
    logits_eager, _ = _train(eager, 3)
    logits_compiled, _ = _train(compiled, 3)
    assert not any("_orig_mod" in key for key in compiled.state_dict())
    torch.testing.assert_close(logits_compiled, logits_eager, rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert (b - a).abs().max() <= 1e-4 * a.abs().max(), name


def test_inductor_compiles_the_closed_form_lrn_to_the_same_numbers():
    """The one real compile of the suite (~20 s here): what torch.compile makes of the LRN on a GPU is its
    point, so its generated code must equal the eager op, forward and backward."""
    x = (torch.randn(3, 10, 7, 5, generator=torch.Generator().manual_seed(0)) * 30).relu()
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def lrn(v):
        return closed_form_lrn(v, 5, 1e-4, 0.75, 2.0, 2)

    results = []
    for run in (lrn, torch.compile(lrn, backend="inductor", fullgraph=True)):
        v = x.clone().requires_grad_()
        y = run(v)
        y.backward(grad)
        results.append((y.detach(), v.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)


def test_split_groups_on_an_arch_without_grouped_convolutions_is_said_not_silently_accepted(prepared, tmp_path):
    from conftest import invoke_alexnet

    from alexnet_cli.models.execution import split_groups_note

    assert split_groups_note(apply_execution(_paper(), split_groups=True), "paper") is None
    note = split_groups_note(apply_execution(build_model("owt", 10, fc_width=16), split_groups=True), "owt")
    assert note == "model.split_groups: arch 'owt' has no grouped convolution; the switch changes nothing"
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", tmp_path / "run",
                            "--dry-run", "--set", "model.arch=owt", "--set", "model.split_groups=true",
                            "--set", "model.fc_width=16", "--set", "data.batch_size=4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "has no grouped convolution" in " ".join(result.stdout.split())
