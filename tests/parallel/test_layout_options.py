"""Every option of a recipe's ``model`` section reaches every layout's network: with each option at a value other
than its default, each split layout's forward equals the single-device network's, or the layout refuses the
option by its name before any process starts. All options and layouts in one pair of gloo processes."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
from torch import nn

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import build_network
from alexnet_cli.models.paper import LocalResponseNorm
from alexnet_cli.parallel.layouts import LAYOUTS
from alexnet_cli.parallel.spawn import run_in_processes
from alexnet_cli.parallel.towers import TowerParallelAlexNet
from alexnet_cli.parallel.weird_trick import WeirdTrickAlexNet
from alexnet_cli.recipes import ModelConfig

# Every case starts here: the paper's layers with 16-wide fc6/fc7 and 4 classes, so that a case builds in
# milliseconds; the fc_width and num_classes cases change these. He's init keeps the signal's size through the
# layers, so that what an option changes reaches the class scores: with the paper's N(0, 0.01) weights and
# biases of 1, the scores of LRN sizes 3 and 5 differ by 5e-6, below any tolerance.
TINY = ModelConfig(num_classes=4, fc_width=16, init="kaiming")

# Each field of ModelConfig at a value other than TINY's (and the default's).
OPTION_VALUES = {
    "arch": "paper-one-tower",  # the towers layouts refuse it, naming model.arch
    "num_classes": 5,  # odd: the split layouts cut fc8's rows 3 + 2
    "dropout": 0.0,  # the one case compared in training mode, where dropout acts
    "init": "glorot",
    "fc_width": 24,
    "lrn": False,
    "overlap_pool": False,
    # Execution switches: same numbers by design (models/execution.py), so these check that each layout runs
    # with them and agrees, not that it keeps them.
    "lrn_impl": "closed-form",
    "split_groups": True,
    "channels_last": True,
}
# The fields no forward here can check, and why.
NOT_CHECKED = {
    # torch.compile wraps the network the strategy leaves (compile_in_place), the split layouts refuse it
    # (Layout.compiles_model), and tests/models/test_execution.py compares compiled with eager steps.
    "compile": "compiled after the split, refused by the split layouts",
    "compile_mode": "compile's",
    "compile_backend": "compile's",
}

# The split layouts' networks on this rank of two, from the single-device network. hybrid is two-gpu's
# TowerParallelAlexNet in pairs (4 processes): its network is two-gpu's.
SPLITS = {
    "two-gpu": lambda full, rank: TowerParallelAlexNet(full, rank=rank, size=2, group=dist.group.WORLD),
    "weird-trick": lambda full, rank: WeirdTrickAlexNet(full, rank=rank, size=2, group=dist.group.WORLD),
}
SPLIT_MODELS = {"two-gpu": TowerParallelAlexNet, "weird-trick": WeirdTrickAlexNet}
IMAGES_PER_RANK = 1


def _network(option: str) -> torch.nn.Module:
    """The single-device network of ``option``'s case, the same weights on every rank."""
    config = dataclasses.replace(TINY, **{option: OPTION_VALUES[option]})
    torch.manual_seed(0)
    model = build_network(config, config.num_classes)
    return model.train(config.dropout == 0.0)  # eval mode turns dropout off in every other case


def _images() -> torch.Tensor:
    # ×100: activations large enough that LRN's α·Σa² is not lost beside its k (§3.3)
    return torch.randn(2 * IMAGES_PER_RANK, 3, 227, 227, generator=torch.Generator().manual_seed(1)) * 100


def _layout_scores(rank: int, world: int) -> dict[str, dict[str, torch.Tensor | str]]:
    """Every case's class scores of the whole batch from each split layout, or the layout's refusal."""
    images = _images()
    scores: dict[str, dict[str, torch.Tensor | str]] = {}
    for option in OPTION_VALUES:
        scores[option] = {}
        for name, split in SPLITS.items():
            full = _network(option)
            try:
                LAYOUTS[name].check_model(full)
            except AlexnetError as refusal:  # asked before any process starts, so the same on every rank
                scores[option][name] = str(refusal)
                continue
            model = split(full, rank).train(full.training)
            mine = images if name == "two-gpu" else images.tensor_split(world)[rank]  # towers share one batch
            with torch.no_grad():
                scores[option][name] = model(mine)  # every image's scores, on every rank
    return scores


@pytest.fixture(scope="module")
def layout_scores():
    return run_in_processes(_layout_scores, 2)


@pytest.fixture(scope="module")
def single_device_scores():
    with torch.no_grad():
        return {option: _network(option)(_images()) for option in OPTION_VALUES}


def test_every_model_option_is_checked_across_layouts_or_excused():
    fields = {field.name for field in dataclasses.fields(ModelConfig)}
    assert fields == set(OPTION_VALUES) | set(NOT_CHECKED), "give a new ModelConfig field a value in OPTION_VALUES"
    for option, value in OPTION_VALUES.items():
        assert value != getattr(TINY, option), option


def test_every_split_kind_of_layout_is_checked():
    split_kinds = {layout.kind for layout in LAYOUTS.values() if layout.kind != "data-parallel"}
    assert split_kinds == {LAYOUTS[name].kind for name in SPLITS}


@pytest.mark.parametrize("layout", SPLITS)
@pytest.mark.parametrize("option", OPTION_VALUES)
def test_each_model_option_gives_a_split_layout_the_single_devices_forward(layout_scores, single_device_scores,
                                                                          option, layout):
    value = OPTION_VALUES[option]
    got = layout_scores[option][layout]
    if isinstance(got, str):
        assert f"model.{option}" in got, f"layout {layout} refuses model.{option}={value!r} without naming it: {got}"
        return
    torch.testing.assert_close(got, single_device_scores[option], rtol=1e-4, atol=1e-5,
                               msg=lambda detail: f"model.{option}={value!r}: layout {layout}'s forward is not one "
                                                  f"device's\n{detail}")


@pytest.mark.parametrize("layout", SPLITS)
def test_each_split_layout_runs_the_execution_switches_the_network_was_built_with(layout):
    """What the forward comparison cannot see, since by design it changes no number: the LRN kernels and the
    memory format (GPU speed) must reach every rank's network, not only one device's."""
    full = build_network(dataclasses.replace(TINY, lrn_impl="closed-form", channels_last=True), TINY.num_classes)
    for rank in range(2):
        split = SPLIT_MODELS[layout](full, rank=rank, size=2, group=None)  # built only: no forward, no group
        convs = [module.weight for module in split.modules() if isinstance(module, nn.Conv2d)]
        assert convs and all(weight.is_contiguous(memory_format=torch.channels_last) for weight in convs), layout
        assert {module.impl for module in split.modules() if isinstance(module, LocalResponseNorm)} == {"closed-form"}
