"""predict feeds the network what the centre-crop evaluation feeds it, whatever the normalisation."""

import json

import pytest
import torch
from conftest import invoke_alexnet

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.inspection.predict import preprocess
from alexnet_cli.models.checkpoint_meta import InputFormat
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
    ours = preprocess(InputFormat.from_dict(meta), files)
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
    wide, narrow = preprocess(InputFormat.from_dict(meta), [tmp_path / "wide.png", tmp_path / "narrow.png"])
    assert narrow.mean() > 100  # mid-grey on average, not white
    assert (wide - narrow).abs().max() <= 1


def test_an_image_whose_header_claims_a_huge_size_is_named_not_decoded(tmp_path):
    import struct
    import zlib

    from alexnet_cli.errors import AlexnetError

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a PNG header claiming 30000×30000 pixels, PIL's decompression-bomb size
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    meta = {"crop": 227, "resize_size": 256, "normalization": {"channel_mean": [0, 0, 0], "channel_std": [1, 1, 1]}}
    with pytest.raises(AlexnetError, match=f"^{bomb}: too large to decode safely"):
        preprocess(InputFormat.from_dict(meta), [bomb])


def test_predict_names_the_top_classes_of_an_image(trained_run, prepared, tmp_path):
    out, _ = trained_run
    image = sorted((prepared / "val").glob("*/*.JPEG"))[0]
    report = tmp_path / "p.json"
    result = invoke_alexnet("predict", "--checkpoint", out / "checkpoints" / "last.ckpt", image, "--top", "3",
                            "--json", report)
    assert result.returncode == 0, result.stderr
    top = json.loads(report.read_text())["predictions"][0]["classes"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["words"].startswith("demo ")
