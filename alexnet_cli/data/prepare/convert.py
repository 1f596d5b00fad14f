"""One image in, one clean baseline RGB JPEG out — or a reason why not.

ILSVRC2012 holds CMYK JPEGs, a PNG named .JPEG, greyscale and EXIF-rotated
images, and the odd truncated file; DALI and PIL must both read every output.
"""

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ResizeMode = Literal["paper", "shorter"]
JPEG_QUALITY = 90  # visually lossless at 256 px
# What the disk check allows per stored image at 256×256: ImageNet photos average ~28 KB at quality 90
# (the 1,000 samples: 28 MB); the rest is headroom for busy photos.
BYTES_PER_IMAGE_AT_256 = 40_000


# Modes whose samples are wider than 8 bits: PIL's convert("RGB") clips them at 255 instead of rescaling,
# so a mid-grey 16-bit PNG would turn white and a [0, 1] float TIFF black. "I" (32-bit) is how PIL opens
# 16-bit PGM/PPM files and 16- or 32-bit integer TIFFs; "F" is a float TIFF.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_WIDE_GREY_MODES = (*_SIXTEEN_BIT_MODES, "I", "F")
_EXIF_ORIENTATIONS = range(2, 9)  # 1 is upright; 0 and 9+ are not orientations: the image is left as it is
_TIFF_BITS_PER_SAMPLE = 258


class BadImage(Exception):
    """The file cannot be turned into an image; the message says why."""


@dataclass(frozen=True)
class Converted:
    jpeg: bytes
    rgb: np.ndarray  # what the JPEG encodes, before compression: for the statistics
    fixes: tuple[str, ...]  # what was converted: cmyk, png, grey, exif-rotated, ...


def convert_image(data: bytes, size: int, mode: ResizeMode, quality: int = JPEG_QUALITY) -> Converted:
    """Decode any image, fix it up and resize it as the paper did (§2).

    ``paper``: shorter side to ``size``, then the central ``size``×``size`` crop.
    ``shorter``: shorter side to ``size``, aspect kept. Resampling is PIL's
    antialiased bicubic; JPEG's DCT scaling (draft mode) does the first
    factors of 2 when shrinking by 2× or more, which is both faster and sound.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fixes = []
        if image.format != "JPEG":
            fixes.append(image.format.lower() if image.format else "not-jpeg")
        if image.mode == "CMYK":
            fixes.append("cmyk")
        elif image.mode in ("L", "LA", "1", *_WIDE_GREY_MODES):
            fixes.append("grey")
        width, height = image.size
        if image.format == "JPEG":
            scale = size / min(width, height)
            image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
        orientation = image.getexif().get(0x0112, 1)
        image.load()
        if orientation in _EXIF_ORIENTATIONS:
            image = ImageOps.exif_transpose(image)
            fixes.append("exif-rotated")
        if image.mode in _WIDE_GREY_MODES:
            fixes.append("float" if image.mode == "F" else "16-bit")
        image = to_rgb8(image)
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too large to decode safely ({exc})") from None
    except UnidentifiedImageError:  # PIL's message names an in-memory buffer, which tells the user nothing
        raise BadImage("unreadable: not an image in a format PIL reads") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"unreadable or truncated ({exc})") from None
    image = _resize(image, size, mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)  # baseline, 4:2:0, no EXIF
    return Converted(buffer.getvalue(), np.asarray(image), tuple(fixes))


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, wide samples scaled by the range their type means, never clipped: 16-bit ones
    (65535 → 255); floats in [0, 1] (1.0 → 255); a 32-bit integer TIFF's by its declared bits. Samples whose
    range cannot be told (floats outside [0, 1], 32-bit integers) make the image a ``BadImage``: skipped and
    listed, not stored as a black or white square."""
    if image.mode in _WIDE_GREY_MODES:
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide * (255.0 / _full_scale(image, wide))), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _full_scale(image: Image.Image, samples: np.ndarray) -> float:
    """The sample value that means white for a wide mode."""
    low, high = (float(samples.min()), float(samples.max())) if samples.size else (0.0, 0.0)
    if image.mode == "F":
        if low < 0 or high > 1:
            raise BadImage(f"floating-point pixels from {low:g} to {high:g}: no display range to convert them by")
        return 1.0
    bits = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE) if image.mode == "I" else 16
    bits = bits[0] if isinstance(bits, tuple) else bits
    if bits not in (None, 8, 16) or high > 65535 or low < 0:
        raise BadImage(f"{bits or 32}-bit integer pixels from {low:g} to {high:g}: no display range to convert "
                       "them by")
    return 255.0 if bits == 8 else 65535.0


def _resize(image: Image.Image, size: int, mode: ResizeMode) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if mode == "shorter":
        return image
    left = int(round((new_w - size) / 2.0))  # torchvision's CenterCrop arithmetic
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
