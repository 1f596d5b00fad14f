"""The paper's SGD: weights and biases in two groups, decay where the recipe says, old states still load."""

import torch

from alexnet_cli.models import build_model
from alexnet_cli.recipes import OptimConfig
from alexnet_cli.training.optimizer import parameter_groups, sgd, split_single_group


def test_biases_are_not_decayed_unless_the_recipe_says_so():
    model = build_model("keras-v2", 5)
    kept, decayed = parameter_groups(model, OptimConfig(decay_biases=False)), parameter_groups(model, OptimConfig())
    assert kept[0]["weight_decay"] == decayed[0]["weight_decay"] == 5e-4
    assert kept[1]["weight_decay"] == 0.0 and decayed[1]["weight_decay"] == 5e-4
    assert all(p.dim() == 1 for p in kept[1]["params"]) and all(p.dim() > 1 for p in kept[0]["params"])


def test_a_bias_without_decay_moves_only_by_its_gradient():
    torch.manual_seed(0)
    model = build_model("keras-v2", 5)
    optimizer = sgd(model, OptimConfig(decay_biases=False, momentum=0.0), lr=0.1)
    bias = model.classifier.fc8.bias
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before_weight = model.classifier.fc8.weight.detach().clone()
    bias.data.fill_(1.0)
    optimizer.step()
    assert torch.equal(bias.detach(), torch.ones_like(bias))  # zero gradient, no decay: unchanged
    torch.testing.assert_close(model.classifier.fc8.weight.detach(), before_weight * (1 - 0.1 * 5e-4))


def test_a_single_group_state_from_before_the_split_loads_into_the_two_groups():
    torch.manual_seed(0)
    model = build_model("keras-v2", 5)
    names = [name for name, _ in model.named_parameters()]
    # what this tool saved before: one group, the momentum buffer of parameter i under index i
    old = {"state": {i: {"momentum_buffer": torch.full_like(p, float(i))} for i, (_, p) in
                     enumerate(model.named_parameters())},
           "param_groups": [{"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "dampening": 0, "nesterov": False,
                             "maximize": False, "foreach": None, "differentiable": False, "fused": True,
                             "params": list(range(len(names)))}]}
    optimizer = sgd(model, OptimConfig(decay_biases=False), lr=0.01)
    optimizer.load_state_dict(split_single_group(old, names))
    for index, (name, parameter) in enumerate(model.named_parameters()):
        assert (optimizer.state[parameter]["momentum_buffer"] == index).all(), name
