"""predict feeds the network what the centre-crop evaluation feeds it, whatever the normalisation."""

import pytest
import torch

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.inspection.predict import preprocess
from alexnet_cli.recipes import DataConfig


@pytest.mark.parametrize("normalize", ["channel", "image"])
def test_predict_preprocessing_equals_the_centre_crop_pipeline(prepared, normalize):
    module = DaliDataModule(prepared, DataConfig(device="cpu", batch_size=4, num_threads=1, py_workers=0,
                                                 normalize=normalize), crop=227)
    loader = module.loader("val", "val", shard=(0, 1))
    images, _ = next(iter(loader))
    files = module.split("val").files[:4]
    norm = module.normalization
    meta = {"crop": 227, "resize_size": 256, "normalization": {
        "channel_mean": norm.channel_mean.tolist(), "channel_std": norm.channel_std.tolist(),
        **({"mean_image": torch.as_tensor(norm.mean_image)} if norm.mean_image is not None else {})}}
    ours = preprocess(meta, files)
    assert ours.shape == images.shape == (4, 3, 227, 227)
    scale = 1.0 if normalize == "image" else float(norm.channel_std.min())  # back to 0–255 levels
    difference = (ours - images.cpu()).abs() * scale
    assert difference.mean() < 0.5 and difference.max() <= 3  # two JPEG decoders, the same pixels ±rounding


def test_predict_rescales_a_sixteen_bit_image_like_its_eight_bit_twin(tmp_path):
    import numpy as np
    from PIL import Image

    grey = np.linspace(0, 65535, 256 * 300).reshape(256, 300).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "wide.png")
    Image.fromarray(np.rint(grey / 257).astype(np.uint8)).save(tmp_path / "narrow.png")
    meta = {"crop": 227, "resize_size": 256, "normalization": {"channel_mean": [0, 0, 0], "channel_std": [1, 1, 1]}}
    wide, narrow = preprocess(meta, [tmp_path / "wide.png", tmp_path / "narrow.png"])
    assert narrow.mean() > 100  # mid-grey on average, not white
    assert (wide - narrow).abs().max() <= 1
