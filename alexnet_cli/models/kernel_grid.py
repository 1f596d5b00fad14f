"""A conv layer's kernels as one RGB image, laid out like the paper's Figure 3.

conv1's 96 kernels (11×11×3) are shown in colour, each min-max normalised on
its own and enlarged with nearest-neighbour; the paper arch's two groups of 48
(one per GPU) are two separate blocks, as in the figure. Deeper layers show each
(output, input) kernel slice as a greyscale tile. ``alexnet viz-filters`` writes it
as a PNG; training logs it to TensorBoard / W&B each epoch.
"""

from dataclasses import dataclass

import numpy as np
import torch

from alexnet_cli.errors import AlexnetError

GAP = 1  # pixels between tiles, at scale 1
BLOCK_GAP = 4  # extra pixels between the two towers' blocks
COLUMNS = 16  # Figure 3 lays each tower's 48 kernels out as 3 rows of 16


@dataclass(frozen=True)
class GridLayout:
    tile: int  # tile side in pixels, after scaling
    gap: int
    block_gap: int
    columns: int
    per_block: int  # kernels per block (a tower's share)

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left pixel (x, y) of kernel ``index``'s tile."""
        block, within = divmod(index, self.per_block)
        rows_per_block = -(-self.per_block // self.columns)
        row, column = divmod(within, self.columns)
        pitch = self.tile + self.gap
        y = self.gap + block * (rows_per_block * pitch + self.block_gap) + row * pitch
        return self.gap + column * pitch, y


def conv_weights(model: torch.nn.Module, layer: str) -> torch.Tensor:
    """The weight of the conv layer named ``layer`` (e.g. conv1), or torchvision's features.N."""
    modules = dict(model.named_modules())
    candidates = [name for name in modules if name == layer or name.endswith(f".{layer}")]
    if not candidates and layer == "conv1":
        candidates = [name for name, m in modules.items() if isinstance(m, torch.nn.Conv2d)][:1]
    if not candidates or not isinstance(modules[candidates[0]], torch.nn.Conv2d):
        convs = [n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
        raise AlexnetError(f"--layer {layer!r} is not a conv layer of this model (try one of {', '.join(convs)})")
    return modules[candidates[0]].weight.detach().float().cpu()


def normalise_kernel(kernel: np.ndarray) -> np.ndarray:
    low, high = kernel.min(), kernel.max()
    return (kernel - low) / (high - low) if high > low else np.zeros_like(kernel)


def filter_grid(weights: torch.Tensor, *, scale: int = 4, groups: int = 1) -> tuple[np.ndarray, GridLayout]:
    """An RGB uint8 image of the kernels and the layout to find each tile in it."""
    w = weights.numpy()
    if w.shape[1] == 3:
        kernels = [normalise_kernel(k).transpose(1, 2, 0) for k in w]  # HWC colour tiles
    else:
        kernels = [np.repeat(normalise_kernel(k)[..., None], 3, axis=2) for k in w.reshape(-1, *w.shape[2:])]
        groups = 1
    side = w.shape[-1] * scale
    per_block = -(-len(kernels) // groups)
    columns = min(COLUMNS, per_block) if w.shape[1] == 3 else w.shape[1]
    layout = GridLayout(side, GAP * scale, BLOCK_GAP * scale, columns, per_block)
    rows = -(-per_block // columns)
    width = layout.gap + columns * (side + layout.gap)
    height = layout.gap + groups * rows * (side + layout.gap) + (groups - 1) * layout.block_gap
    canvas = np.full((height, width, 3), 255, np.uint8)
    for index, kernel in enumerate(kernels):
        tile = np.kron(kernel, np.ones((scale, scale, 1)))  # nearest-neighbour enlargement
        x, y = layout.origin(index)
        canvas[y : y + side, x : x + side] = np.round(tile * 255).astype(np.uint8)
    return canvas, layout


def tower_blocks(layer: str, weights: torch.Tensor) -> int:
    """2 for the paper's conv1 (96 kernels, 48 on each GPU: Figure 3's two blocks), else 1."""
    return 2 if layer == "conv1" and weights.shape[0] == 96 else 1
