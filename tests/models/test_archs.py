"""ArchSpec says what an arch can do (its crops, its options); build_network is the one way from a recipe's
``model`` section to a network."""

import pytest
import torch
from torch import nn

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import ARCHS, build_model, build_network
from alexnet_cli.models.build import ARCH_OPTIONS, compile_options, input_crop
from alexnet_cli.models.execution import CompileOptions, SplitGroupConv2d
from alexnet_cli.models.paper import LocalResponseNorm
from alexnet_cli.recipes import ModelConfig

NON_DEFAULT = {"fc_width": 24, "lrn": False, "overlap_pool": False}  # one value per arch option, not its default


def test_every_arch_option_has_a_non_default_value_here():
    assert set(NON_DEFAULT) == set(ARCH_OPTIONS) and all(NON_DEFAULT[o] != d for o, d in ARCH_OPTIONS.items())


@pytest.mark.parametrize("arch, requested, crop", [("paper", None, 227), ("d2l", 224, 224), ("owt", 256, 256),
                                                   ("vgg11", None, 224), ("vgg16", 240, 240)])
def test_an_arch_trains_on_its_own_crop_or_any_other_its_adaptive_pool_takes(arch, requested, crop):
    assert input_crop(arch, requested) == crop


@pytest.mark.parametrize("arch", [name for name, spec in ARCHS.items() if spec.fixed_input])
def test_an_arch_with_a_fixed_input_refuses_another_crop(arch):
    other = ARCHS[arch].input_size + 16
    with pytest.raises(AlexnetError, match=f"data.crop_size {other}: arch '{arch}' takes"):
        input_crop(arch, other)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("option", list(ARCH_OPTIONS))
def test_an_arch_builds_with_exactly_the_options_its_spec_names(arch, option):
    with torch.device("meta"):  # shapes only: the refusal or the build is what counts
        if option not in ARCHS[arch].options:
            with pytest.raises(AlexnetError, match=f"model.{option}=.* arch '{arch}' has no such layers"):
                build_model(arch, 10, init="builder", **{option: NON_DEFAULT[option]})
            return
        model = build_model(arch, 10, init="builder", **{option: NON_DEFAULT[option]})
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    lrn = [m for m in model.modules() if isinstance(m, LocalResponseNorm)]
    pools = [m.kernel_size for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert {"fc_width": widths[:-1] == [24, 24], "lrn": lrn == [], "overlap_pool": set(pools) == {2}}[option]


def test_a_refused_option_names_the_archs_that_take_it():
    with pytest.raises(AlexnetError, match=r"use paper or paper-one-tower or owt or vgg11 or vgg13 .*\)$"):
        build_model("d2l", fc_width=64)


def test_build_network_builds_the_configs_network_with_its_execution_switches():
    config = ModelConfig(arch="paper", fc_width=8, overlap_pool=False, dropout=0.25, init="kaiming",
                         lrn_impl="closed-form", split_groups=True, channels_last=True)
    torch.manual_seed(3)
    model = build_network(config, 5)
    torch.manual_seed(3)
    plain = build_model("paper", 5, 0.25, init="kaiming", fc_width=8, overlap_pool=False)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())  # same draws
    assert {m.impl for m in model.modules() if isinstance(m, LocalResponseNorm)} == {"closed-form"}
    assert sum(isinstance(m, SplitGroupConv2d) for m in model.modules()) == 3  # conv2, conv4, conv5
    assert model.features.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]


def test_compile_options_are_the_configs_only_when_it_compiles():
    assert compile_options(ModelConfig(compile_mode="max-autotune")) is None
    assert compile_options(ModelConfig(compile=True, compile_backend="aot_eager")) == CompileOptions("default",
                                                                                                     "aot_eager")
