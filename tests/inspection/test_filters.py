"""viz-filters draws exactly the normalised kernels, where the layout says."""

import numpy as np
import torch
from conftest import invoke_alexnet
from PIL import Image

from alexnet_cli.inspection.filters import save_filter_grid
from alexnet_cli.models import build_model
from alexnet_cli.models.kernel_grid import normalise_kernel


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


def test_since_init_draws_the_change_and_the_start_is_the_runs_real_start(prepared, tmp_path):
    """A run whose one step barely moved its weights (lr 1e-9): the rebuilt start must equal them."""
    from conftest import NARROW_FC, invoke_alexnet

    from alexnet_cli.inspection.filters import conv_weights, relative_change
    from alexnet_cli.models.checkpoints import initial_model, load_checkpoint

    out = tmp_path / "run"
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--quiet",
                            "--set", "trainer.max_steps=1", "--set", "data.batch_size=4", "--set", "optim.lr=1e-9",
                            "--set", "optim.weight_decay=0", "--set", "trainer.limit_val_batches=0", *NARROW_FC)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = load_checkpoint(out / "checkpoints" / "last.ckpt")
    start = initial_model(loaded)
    assert relative_change(loaded.model, start) < 1e-6
    assert relative_change(loaded.model, build_model("paper", num_classes=4, init="kaiming")) > 1.0  # another start
    # drawn: the change, each kernel normalised on its own
    model = build_model("paper", num_classes=10, init="kaiming")
    moved = build_model("paper", num_classes=10, init="builder")
    with torch.no_grad():
        moved.load_state_dict(model.state_dict())
        moved.features.conv1.weight.add_(torch.linspace(0, 1, 96 * 363).reshape(96, 3, 11, 11))
    layout = save_filter_grid(moved, tmp_path / "change.png", scale=1, start=model)
    image = np.asarray(Image.open(tmp_path / "change.png"))
    x, y = layout.origin(5)
    delta = conv_weights(moved, "conv1")[5] - conv_weights(model, "conv1")[5]
    expected = np.round(normalise_kernel(delta.numpy()).transpose(1, 2, 0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(image[y : y + 11, x : x + 11], expected)
    shown = invoke_alexnet("viz-filters", "--checkpoint", out / "checkpoints" / "last.ckpt", "--since-init",
                           "--out", tmp_path / "f.png")
    assert shown.returncode == 0 and "conv1 moved 0.0% from its initial values" in " ".join(shown.stdout.split())


def test_viz_filters_writes_a_png_of_two_tower_blocks(trained_run, tmp_path):
    out, _ = trained_run
    png = tmp_path / "filters.png"
    result = invoke_alexnet("viz-filters", "--checkpoint", out / "checkpoints" / "last.ckpt", "--out", png,
                            "--scale", "2")
    assert result.returncode == 0, result.stderr
    with Image.open(png) as image:
        # 16 columns of 22-px tiles with 2-px gaps; 2 blocks of 3 rows with an 8-px gap between blocks
        assert image.size == (2 + 16 * 24, 2 + 6 * 24 + 8)
