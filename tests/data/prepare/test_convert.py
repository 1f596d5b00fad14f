"""One image in, one clean baseline RGB JPEG out."""

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_cli.data.prepare.convert import BadImage, convert_image


def encode(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "JPEG"), **kwargs)
    return buffer.getvalue()


def test_exif_rotated_images_are_turned_upright():
    image = Image.new("RGB", (400, 300), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 200, 300))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    converted = convert_image(encode(image, exif=exif), 64, "shorter")
    assert "exif-rotated" in converted.fixes
    upright = Image.open(io.BytesIO(converted.jpeg))
    assert upright.size[1] > upright.size[0]  # landscape stored, portrait shown
    top = np.asarray(upright)[2, upright.size[0] // 2]
    assert top[0] > 200 and top[2] < 60  # the red half is now on top


def test_paper_mode_is_the_central_square_of_the_shorter_side():
    image = Image.new("RGB", (512, 256), (10, 10, 10))
    image.paste((250, 250, 250), (128, 0, 384, 256))  # the central square is white
    converted = convert_image(encode(image), 128, "paper")
    assert converted.rgb.shape == (128, 128, 3)
    assert converted.rgb[:, 4:-4].min() > 200


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA"])
def test_other_colour_modes_become_rgb(mode):
    image = Image.new("RGB", (80, 60), (200, 100, 50)).convert(mode)
    fmt = "PNG" if mode in ("P", "RGBA") else "JPEG"
    converted = convert_image(encode(image, format=fmt), 32, "shorter")
    stored = Image.open(io.BytesIO(converted.jpeg))
    assert stored.mode == "RGB" and stored.format == "JPEG" and min(stored.size) == 32


def test_truncated_and_garbage_files_raise_bad_image():
    data = encode(Image.new("RGB", (300, 300), (1, 2, 3)))
    with pytest.raises(BadImage, match="truncated"):
        convert_image(data[: len(data) // 2], 64, "paper")
    with pytest.raises(BadImage):
        convert_image(b"not an image at all", 64, "paper")
