"""``alexnet summary``: each layer's output shape, parameters and neurons, as §3.5 counts them."""

from dataclasses import dataclass

import torch
from torch import nn

from alexnet_cli.models import ARCHS, build_model


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    neurons: int  # output units of conv and FC layers (§3.5's "neurons"); 0 for the others


def summarize(arch: str, num_classes: int = 1000) -> tuple[list[LayerRow], int]:
    """One row per leaf layer, from a forward pass of one image at the arch's input size."""
    model = build_model(arch, num_classes).eval()
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if list(module.children()) or not name:
            continue

        def record(mod, _inputs, output, name=name):
            shape = tuple(output.shape[1:])
            params = sum(p.numel() for p in mod.parameters())
            neurons = output[0].numel() if isinstance(mod, (nn.Conv2d, nn.Linear)) else 0
            rows.append(LayerRow(name, type(mod).__name__, shape, params, neurons))

        hooks.append(module.register_forward_hook(record))
    size = ARCHS[arch].input_size
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return rows, sum(p.numel() for p in model.parameters())
