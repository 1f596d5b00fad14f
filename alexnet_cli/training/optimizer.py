"""The paper's SGD (§5) and the layout of its state: weights and biases in two parameter groups.

§5's update decays "the weights"; cuda-convnet, which trained the paper's network, applied no decay
to biases. ``optim.decay_biases`` chooses; the two groups exist either way, so that a checkpoint's
optimizer state has one layout whatever the choice (and a run can change it on resume).
"""

import torch
from torch import nn

from alexnet_cli.models.parameters import is_bias, ordered_names
from alexnet_cli.recipes import OptimConfig


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    named = dict(model.named_parameters())
    order = ordered_names(list(named))
    weights = [named[n] for n in order if not is_bias(n)]
    biases = [named[n] for n in order if is_bias(n)]
    # Named: the learning-rate monitor logs lr-SGD/weights and lr-SGD/biases.
    return [{"params": weights, "weight_decay": cfg.weight_decay, "name": "weights"},
            {"params": biases, "weight_decay": cfg.weight_decay if cfg.decay_biases else 0.0, "name": "biases"}]


def sgd(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.SGD:
    """The paper's update (§5: momentum, weight decay) as one fused kernel per step, which can also skip
    a step on the device (``found_inf``) without the host waiting to find out whether to."""
    return torch.optim.SGD(parameter_groups(model, cfg), lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           fused=True)


def apply_weight_decay(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """The recipe's decay per group (a resumed state brings the saved run's values)."""
    weights, biases = optimizer.param_groups
    weights["weight_decay"] = cfg.weight_decay
    biases["weight_decay"] = cfg.weight_decay if cfg.decay_biases else 0.0


def split_single_group(state: dict, names: list[str]) -> dict:
    """An optimizer state saved with one parameter group (parameters in ``names`` order, as this tool wrote
    them before the split) in the two-group layout of ``parameter_groups``."""
    position = {name: index for index, name in enumerate(names)}
    order = ordered_names(names)
    saved = state["state"]
    regrouped = {new: saved[position[name]] for new, name in enumerate(order) if position[name] in saved}
    group = state["param_groups"][0]
    weights = [index for index, name in enumerate(order) if not is_bias(name)]
    biases = [index for index, name in enumerate(order) if is_bias(name)]
    return {**state, "state": regrouped, "param_groups": [{**group, "params": weights, "name": "weights"},
                                                          {**group, "params": biases, "name": "biases"}]}


def zero_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter a zero momentum buffer before its first step. The fused kernel's first step
    would otherwise start from uninitialised memory if that step were skipped; from zero, buf = 0·m + g
    is exactly PyTorch's first step (buf = g)."""
    for group in optimizer.param_groups:
        if group["momentum"]:
            for p in group["params"]:
                state = optimizer.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
