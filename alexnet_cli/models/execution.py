"""How a network runs, not what it computes: switches that change its speed and leave its numbers and its
state_dict as they are (``model.lrn_impl``, ``model.split_groups``, ``model.channels_last``, ``model.compile``).

Which of them wins is a property of the GPU, the library versions and the batch: measured by
``scripts/gpu-check.sh`` (docs/benchmarks.md), and only there may a recipe's default change.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cli.models.lrn import LrnImpl, is_channels_last
from alexnet_cli.models.paper import LocalResponseNorm


class SplitGroupConv2d(nn.Conv2d):
    """A grouped convolution run as one plain convolution per group, each on its slice of the same weight.

    cuDNN's grouped kernels are a known slow path (pytorch/pytorch#70954, #73764); the paper's two towers
    were two convolutions anyway. Same parameters, same state_dict, same numbers as ``nn.Conv2d``.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.groups == 1 or self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        inputs = input.chunk(self.groups, dim=1)
        weights = weight.chunk(self.groups, dim=0)
        biases = bias.chunk(self.groups) if bias is not None else [None] * self.groups
        return torch.cat([F.conv2d(x, w, b, self.stride, self.padding, self.dilation)
                          for x, w, b in zip(inputs, weights, biases)], dim=1)


def split_grouped_convolutions(model: nn.Module) -> int:
    """Run every grouped ``nn.Conv2d`` of ``model`` as ``SplitGroupConv2d``; returns how many.

    The class is swapped in place: the layer keeps its parameters, hooks and state_dict keys, so
    checkpoints written either way load either way.
    """
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and module.groups > 1:
            module.__class__ = SplitGroupConv2d
            swapped += 1
    return swapped


def split_groups_note(model: nn.Module, arch: str) -> str | None:
    """The line a run says when ``model.split_groups`` finds nothing to split (an arch with no grouped
    convolution), rather than accepting the switch silently."""
    if any(isinstance(module, SplitGroupConv2d) for module in model.modules()):
        return None
    return f"model.split_groups: arch {arch!r} has no grouped convolution; the switch changes nothing"


def set_lrn_impl(model: nn.Module, impl: LrnImpl) -> None:
    for module in model.modules():
        if isinstance(module, LocalResponseNorm):
            module.impl = impl


def prepare_lrn(model: nn.Module, device: torch.device) -> list[str]:
    """Decide, on ``device``, what each LRN layer's ``impl`` runs (``models/lrn.choose_impl``), checking Triton
    there if it is chosen: eagerly, before ``torch.compile`` or a CUDA graph could capture the check. Returns the
    lines to say where the choice differs from what was asked (each once)."""
    channels_last = any(is_channels_last(p) for p in model.parameters())
    notes = [module.choose(device, channels_last).note
             for module in model.modules() if isinstance(module, LocalResponseNorm)]
    return list(dict.fromkeys(note for note in notes if note))


def apply_execution(model: nn.Module, *, lrn_impl: LrnImpl = "auto", split_groups: bool = False,
                    channels_last: bool = False) -> nn.Module:
    """The switches that take effect when the network is built (``compile_in_place`` comes later, on the
    layout the strategy leaves). Channels-last weights make PyTorch's convolutions return channels-last
    maps from conv1 on, which converts the NCHW batch itself."""
    set_lrn_impl(model, lrn_impl)
    if split_groups:
        split_grouped_convolutions(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass(frozen=True)
class CompileOptions:
    mode: str = "default"  # torch.compile's: default, reduce-overhead (CUDA graphs), max-autotune, ...
    backend: str = "inductor"  # aot_eager: the same graph capture without code generation (the CPU tests)


def compile_in_place(model: nn.Module, options: CompileOptions) -> None:
    """``nn.Module.compile``: the module itself runs compiled, its parameters and state_dict keys unchanged
    (``torch.compile(model)`` would wrap it and save every key under ``_orig_mod.``). Lazy: the first call
    traces and compiles."""
    parameter = next(model.parameters(), None)
    if parameter is not None:
        prepare_lrn(model, parameter.device)  # the LRN's choice made outside the graph (a no-op if made already)
    kwargs = {"mode": options.mode} if options.backend == "inductor" else {}
    model.compile(backend=options.backend, **kwargs)


def match_state_layouts(optimizer: torch.optim.Optimizer) -> int:
    """Give every optimizer state tensor its parameter's strides; returns how many changed.

    A resumed optimizer state arrives contiguous; a channels-last weight's gradient is channels-last. The
    fused SGD kernel walks parameter, gradient and momentum as flat memory, so their layouts must agree
    or each weight would take another's momentum.
    """
    changed = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param).copy_(value)
                    changed += 1
    return changed
