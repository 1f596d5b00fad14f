"""``alexnet viz-filters``: the learned kernels as a PNG, like the paper's Figure 3 (the grid itself:
``models/kernel_grid``), and how far training moved them."""

from pathlib import Path

import torch
from PIL import Image

from alexnet_cli.atomic import write_atomic
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.kernel_grid import GridLayout, conv_weights, filter_grid, tower_blocks


def relative_change(model: torch.nn.Module, start: torch.nn.Module, layer: str = "conv1") -> float:
    """‖W − W₀‖ / ‖W₀‖ of ``layer``: how far training moved its kernels from where they started."""
    initial = conv_weights(start, layer)
    return float((conv_weights(model, layer) - initial).norm() / initial.norm())


def save_filter_grid(model: torch.nn.Module, out: Path, *, layer: str = "conv1", scale: int = 4,
                     groups: int | None = None, start: torch.nn.Module | None = None) -> GridLayout:
    """Write the kernel grid of ``layer`` as a PNG; returns its layout. With ``start`` (the network
    before training), draw what training changed: the kernels minus their initial values."""
    if scale < 1:
        raise AlexnetError("--scale must be at least 1")
    weights = conv_weights(model, layer)
    if start is not None:
        weights = weights - conv_weights(start, layer)
    if groups is None:
        groups = tower_blocks(layer, weights)
    canvas, layout = filter_grid(weights, scale=scale, groups=groups)
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise AlexnetError(f"--out {out}: the filter grid is written as a .png file")
    write_atomic(out, lambda tmp: Image.fromarray(canvas).save(tmp, format="PNG"))
    return layout
