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


@pytest.mark.parametrize("fmt", ["PNG", "PPM"])  # PIL opens these as modes I;16 and I
def test_sixteen_bit_greyscale_is_rescaled_to_eight_bits_not_clipped_to_white(fmt):
    levels = np.array([0, 257 * 64, 32768, 257 * 200, 65535], np.uint16)
    wide = np.repeat(np.repeat(levels, 20)[None, :], 100, axis=0)  # five vertical bands, 100×100
    image = Image.fromarray(wide)
    assert Image.open(io.BytesIO(encode(image, format=fmt))).mode in ("I;16", "I")
    converted = convert_image(encode(image, format=fmt), 100, "shorter")
    assert "grey" in converted.fixes
    centres = converted.rgb[50, 10::20]  # the middle of each band, away from resampling at the edges
    assert np.abs(centres.astype(int) - [[0] * 3, [64] * 3, [128] * 3, [200] * 3, [255] * 3]).max() <= 1


def test_float_pixels_in_zero_to_one_are_scaled_by_their_range_not_stored_black():
    levels = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)
    image = Image.fromarray(np.repeat(np.repeat(levels, 20)[None, :], 100, axis=0), "F")
    converted = convert_image(encode(image, format="TIFF"), 100, "shorter")
    assert "grey" in converted.fixes and "float" in converted.fixes
    centres = converted.rgb[50, 10::20, 0].astype(int)
    assert np.abs(centres - [0, 64, 128, 191, 255]).max() <= 1


@pytest.mark.parametrize(("pixels", "mode", "reason"), [
    (np.full((40, 40), 200.0, np.float32), "F", "floating-point pixels from 200 to 200: no display range"),
    (np.full((40, 40), -0.5, np.float32), "F", "floating-point pixels from -0.5 to -0.5"),
    (np.full((40, 40), 100_000, np.int32), "I", "32-bit integer pixels from 100000 to 100000"),
    (np.full((40, 40), 100, np.int32), "I", "32-bit integer pixels from 100 to 100"),  # a TIFF declaring 32 bits
])
def test_wide_pixels_whose_range_cannot_be_told_are_skipped_with_the_reason(pixels, mode, reason):
    with pytest.raises(BadImage, match=reason):
        convert_image(encode(Image.fromarray(pixels, mode), format="TIFF"), 32, "shorter")


@pytest.mark.parametrize("orientation", [0, 9, 255])
def test_an_invalid_exif_orientation_is_left_alone_and_not_counted_as_rotated(orientation):
    image = Image.new("RGB", (400, 300), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = orientation
    converted = convert_image(encode(image, exif=exif), 64, "shorter")
    assert "exif-rotated" not in converted.fixes
    assert converted.rgb.shape[1] > converted.rgb.shape[0]  # still landscape
