"""A small learnable dataset written as the three official ILSVRC2012 files.

Each class is a shape (circle, square, triangle, ...) in a hue of its own,
drawn at a random size, position and shade on a random dull background: a
task a network learns within a few CPU minutes, yet not a trivial one.
The devkit numbers classes in a shuffled ILSVRC2012_ID order, like
the real one, and the train tar carries the real data's hazards (a CMYK JPEG, a
PNG named .JPEG, a greyscale JPEG, a truncated JPEG), so the demo exercises the
very code path that prepares real ImageNet.
"""

import colorsys
import gzip
import io
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from alexnet_cli.atomic import write_atomic
from alexnet_cli.data.prepare import official
from alexnet_cli.data.prepare.run import PrepareOptions, PrepareSummary, check_out_is_ours, prepare_imagenet
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress

SHAPES = ("circle", "square", "triangle", "cross", "ring", "stripes", "diamond", "star")


@dataclass(frozen=True)
class DemoSpec:
    classes: int = 8
    train_per_class: int = 40
    val_per_class: int = 12
    min_side: int = 180  # source images vary in size and aspect, like ImageNet's
    max_side: int = 320
    seed: int = 0
    hazards: bool = True


def demo_wnid(index: int) -> str:
    return f"n9{index:07d}"


def draw_shape(shape: str, hue: float, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """``shape`` in a jittered ``hue`` on a random dull background, at a random place and size."""
    background = tuple(int(v) for v in rng.integers(40, 110, 3))
    jittered = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    rgb = colorsys.hsv_to_rgb(jittered, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    colour = tuple(int(255 * v) for v in rgb)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    radius = rng.uniform(0.18, 0.32) * side
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    elif shape == "cross":
        bar = radius / 3
        draw.rectangle((cx - radius, cy - bar, cx + radius, cy + bar), fill=colour)
        draw.rectangle((cx - bar, cy - radius, cx + bar, cy + radius), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(3, int(radius / 3)))
    elif shape == "stripes":
        bands = 4
        for band in range(bands):
            top = cy - radius + band * 2 * radius / bands
            draw.rectangle((cx - radius, top, cx + radius, top + radius / bands), fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=colour)
    elif shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * 0.45
            angle = math.pi / 2 + k * math.pi / 5
            points.append((cx + r * math.cos(angle), cy - r * math.sin(angle)))
        draw.polygon(points, fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return image


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


def _random_image(spec: DemoSpec, index: int, rng: np.random.Generator) -> Image.Image:
    width, height = (int(v) for v in rng.integers(spec.min_side, spec.max_side + 1, 2))
    return draw_shape(SHAPES[index], index / spec.classes, rng, width, height)


def _hazard_bytes(kind: str, image: Image.Image) -> bytes:
    if kind == "cmyk":
        return _jpeg(image.convert("CMYK"))
    if kind == "png":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if kind == "grey":
        return _jpeg(image.convert("L"))
    if kind == "truncated":
        data = _jpeg(image)
        return data[: len(data) // 3]
    raise ValueError(kind)


HAZARDS = ("cmyk", "png", "grey", "truncated")  # one each, in the first classes' train tars


def _tar_bytes(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0  # deterministic archives
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_demo_source(out: Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Write the three official files for a demo dataset into ``out``; return ``out``.

    A file of that name already in ``out`` is replaced only if it holds exactly what the demo writes.
    """
    if spec.classes > len(SHAPES):
        raise ValueError(f"the demo has at most {len(SHAPES)} classes")
    rng = np.random.default_rng(spec.seed)
    wnids = [demo_wnid(index) for index in range(spec.classes)]
    # Shuffled ILSVRC2012_IDs: the devkit's order differs from sorted WNID order, as in the real one.
    ids = rng.permutation(spec.classes) + 1
    if spec.classes > 1 and np.array_equal(ids, np.arange(1, spec.classes + 1)):
        ids = np.roll(ids, 1)  # a shuffle that happens to be sorted would hide label-mapping bugs
    id_of = dict(zip(wnids, (int(i) for i in ids)))

    inner_tars = []
    for index, wnid in enumerate(wnids):
        files = []
        for number in range(spec.train_per_class):
            image = _random_image(spec, index, rng)
            hazard = HAZARDS[index] if spec.hazards and number == 0 and index < len(HAZARDS) else None
            data = _hazard_bytes(hazard, image) if hazard else _jpeg(image)
            files.append((f"{wnid}_{number + 1}.JPEG", data))
        inner_tars.append((f"{wnid}.tar", _tar_bytes(files)))
    files = {official.TRAIN_TAR: _tar_bytes(inner_tars)}

    val_classes = rng.permutation(np.repeat(np.arange(spec.classes), spec.val_per_class))
    val_files, truth = [], []
    for number, index in enumerate(val_classes, start=1):
        val_files.append((f"ILSVRC2012_val_{number:08d}.JPEG", _jpeg(_random_image(spec, index, rng))))
        truth.append(id_of[wnids[index]])
    files[official.VAL_TAR] = _tar_bytes(val_files)

    entries = sorted((id_of[wnid], wnid, f"demo {SHAPES[i]}") for i, wnid in enumerate(wnids))
    devkit = _tar_bytes([
        ("ILSVRC2012_devkit_t12/data/meta.mat", official.write_meta_mat(entries)),
        ("ILSVRC2012_devkit_t12/" + official.VAL_GROUND_TRUTH, ("\n".join(map(str, truth)) + "\n").encode()),
    ])
    files[official.DEVKIT_TAR] = _gzip(devkit)
    for name, data in files.items():  # every check before the first write
        _check_replaceable(out / name, data)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        _write_file(out / name, data)
    return out


def _check_replaceable(path: Path, data: bytes) -> None:
    """The demo rewrites its own files (the same bytes each time) and nothing else: a real tar is never lost."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_file():
        same = False
    elif path.name == official.DEVKIT_TAR:
        same = path.stat().st_size < 2 * len(data) + 4096 and _same_devkit(path.read_bytes(), data)
    else:
        same = path.stat().st_size == len(data) and path.read_bytes() == data
    if not same:
        raise AlexnetError(f"{path} is not the demo's: the demo never replaces a file it did not write; "
                           "choose another --out")


def _same_devkit(existing: bytes, ours: bytes) -> bool:
    """Equal, or equal but for meta.mat's header text, where earlier demos wrote the time of writing."""
    try:
        old, new = gzip.decompress(existing), gzip.decompress(ours)
    except (OSError, EOFError):
        return False
    if len(old) != len(new):
        return False
    with tarfile.open(fileobj=io.BytesIO(new)) as tar:
        start = tar.getmember("ILSVRC2012_devkit_t12/data/meta.mat").offset_data
    return old[:start] == new[:start] and old[start + 116:] == new[start + 116:]


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _write_file(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def prepare_demo(out: Path, *, workers: int | None = None, spec: DemoSpec = DemoSpec(),
                 progress: Progress | None = None) -> PrepareSummary:
    """Write the demo in the official ILSVRC2012 format to OUT/source and prepare it into OUT.

    OUT is checked before the source is written into it: a folder prepare would refuse loses nothing.
    """
    source = Path(out) / "source"
    if source.is_symlink() or (source.exists() and not source.is_dir()):
        raise AlexnetError(f"{source} is not a folder the demo made (a link or a file); the demo writes its source "
                           "inside --out and never through a link: choose another --out")
    options = PrepareOptions(source=source, out=Path(out), workers=workers, seed=spec.seed)
    check_out_is_ours(options)
    write_demo_source(source, spec)
    return prepare_imagenet(options, progress)
