"""viz-filters draws exactly the normalised kernels, where the layout says."""

import numpy as np
import torch
from PIL import Image

from alexnet_cli.filters import normalise_kernel, save_filter_grid
from alexnet_cli.models import build_model


def test_png_tiles_equal_the_min_max_normalised_kernels(tmp_path):
    model = build_model("paper", num_classes=10)
    weights = torch.linspace(-1, 1, 96 * 3 * 11 * 11).reshape(96, 3, 11, 11) ** 3
    with torch.no_grad():
        model.features.conv1.weight.copy_(weights)
    scale = 3
    layout = save_filter_grid(model, tmp_path / "f.png", scale=scale)
    image = np.asarray(Image.open(tmp_path / "f.png"))
    for index in (0, 47, 48, 95):
        x, y = layout.origin(index)
        tile = image[y : y + 11 * scale, x : x + 11 * scale]
        expected = np.round(normalise_kernel(weights[index].numpy()).transpose(1, 2, 0) * 255)
        np.testing.assert_array_equal(tile[::scale, ::scale], expected.astype(np.uint8))
        np.testing.assert_array_equal(tile[1::scale, 2::scale], tile[::scale, ::scale])  # nearest neighbour
    # the second tower's block starts lower than the first block's rows would continue
    assert layout.origin(48)[1] > layout.origin(47)[1] + layout.tile + layout.gap


def test_deeper_layers_are_drawn_as_grey_tiles(tmp_path):
    model = build_model("paper", num_classes=10)
    save_filter_grid(model, tmp_path / "c2.png", layer="conv2", scale=1)
    image = np.asarray(Image.open(tmp_path / "c2.png"))
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
