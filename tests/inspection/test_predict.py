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
