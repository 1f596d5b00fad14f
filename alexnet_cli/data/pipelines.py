"""The DALI pipelines: training (§4.1 augmentation), centre crop and ten-crop evaluation.

One graph serves CPU and GPU: ``device`` picks the decoder ("cpu" or "mixed")
and the operators' device, nothing else changes, so the CPU tests cover the
GPU path's logic. Inputs come through one ``external_source`` fed by a
``BatchSource`` (see ``sampling``) that decides, in Python and from the seed,
which files make each batch and every random choice (crop offset, flip, PCA
α). That makes an epoch's batches a pure function of (seed, epoch, step):
reproducible, shardable exactly, and resumable mid-epoch.
"""

from typing import Literal

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

Device = Literal["cpu", "gpu"]
TEN_CROP_ORDER = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")


def _decoder_device(device: Device) -> str:
    return "mixed" if device == "gpu" else "cpu"


def _maybe_resize(images, device: Device, resize_size: int | None):
    """Shorter side to ``resize_size``; skipped when the dataset is stored at that size already."""
    if resize_size is None:
        return images
    return fn.resize(images, device=device, resize_shorter=resize_size, antialias=True,
                     interp_type=types.INTERP_LINEAR)


def _centre_position(images, crop: int):
    """torchvision's centre anchor, ``int(round((W - crop) / 2))`` (round half to even), as a
    normalised position, computed in the graph from each image's own shape (DALI itself
    would round 0.5 up and land one pixel off torchvision's crop)."""
    shape = images.shape(dtype=types.INT32, device="cpu")
    out = []
    for axis in (1, 0):  # x from W, y from H (HWC)
        slack = shape[axis] - crop
        half = slack // 2
        odd_slack = slack - 2 * (slack // 2)
        odd_half = half - 2 * (half // 2)
        anchor = half + odd_slack * odd_half  # 14.5 → 14, 15.5 → 16
        out.append(fn.cast(anchor, dtype=types.FLOAT) / fn.cast(slack + (slack == 0), dtype=types.FLOAT))
    return out


@pipeline_def(enable_conditionals=False)
def train_pipeline(source, *, device: Device, crop: int, resize_size: int | None):
    """Random ``crop``×``crop`` crop, random mirror, mean subtraction and PCA colour shift (§4.1).

    ``source`` yields per batch: JPEG bytes, labels, crop position (x, y in [0, 1]),
    mirror flag, and the per-image mean to subtract (channel mean minus the PCA shift,
    so that one fused crop_mirror_normalize applies both).
    """
    jpegs, labels, pos_x, pos_y, mirror, mean, std = fn.external_source(
        source=source, num_outputs=7, batch=True, batch_info=True
    )
    if resize_size is None:
        # The stored image is already at the resize size: decode just the crop (ROI decoding).
        images = fn.decoders.image_crop(jpegs, device=_decoder_device(device), output_type=types.RGB,
                                        crop=(crop, crop), crop_pos_x=pos_x, crop_pos_y=pos_y)
        crop_args = {}
    else:
        images = fn.decoders.image(jpegs, device=_decoder_device(device), output_type=types.RGB)
        images = _maybe_resize(images, device, resize_size)
        crop_args = {"crop": (crop, crop), "crop_pos_x": pos_x, "crop_pos_y": pos_y}
    images = fn.crop_mirror_normalize(images, device=device, dtype=types.FLOAT, output_layout="CHW",
                                      mean=mean, std=std, mirror=mirror, **crop_args)
    return images, labels


@pipeline_def(enable_conditionals=False)
def eval_pipeline(source, *, device: Device, crop: int, resize_size: int | None, ten_crop: bool):
    """Centre crop, or the paper's ten crops stacked as ``[10, 3, crop, crop]`` per image in
    torchvision's ``TenCrop`` order: the ``TEN_CROP_ORDER`` crops, then the same mirrored."""
    jpegs, labels, mean, std = fn.external_source(
        source=source, num_outputs=4, batch=True, batch_info=True
    )
    images = fn.decoders.image(jpegs, device=_decoder_device(device), output_type=types.RGB)
    images = _maybe_resize(images, device, resize_size)
    centre_x, centre_y = _centre_position(images, crop)
    positions = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (centre_x, centre_y)]
    if not ten_crop:
        positions = positions[-1:]
    # torchvision mirrors the whole image and then takes the five crops, so each mirrored crop
    # comes from the horizontally opposite position (1 − x) of the unmirrored image.
    placements = [(x, y, 0) for x, y in positions]
    if ten_crop:
        placements += [(1.0 - x, y, 1) for x, y in positions]
    crops = [
        fn.crop_mirror_normalize(images, device=device, dtype=types.FLOAT, output_layout="CHW",
                                 crop=(crop, crop), crop_pos_x=x, crop_pos_y=y, mean=mean, std=std,
                                 mirror=flip)
        for x, y, flip in placements
    ]
    return (fn.stack(*crops) if ten_crop else crops[0]), labels


def build_pipeline(kind: Literal["train", "val", "ten_crop"], source, *, device: Device, batch_size: int,
                   num_threads: int, device_id: int | None, crop: int, resize_size: int | None,
                   prefetch: int, seed: int) -> Pipeline:
    """Build one of the pipelines; ``device_id=None`` for CPU-only machines."""
    common = dict(batch_size=batch_size, num_threads=num_threads, seed=seed, prefetch_queue_depth=prefetch,
                  device_id=device_id if device == "gpu" else None, py_start_method="spawn")
    if kind == "train":
        pipe = train_pipeline(source, device=device, crop=crop, resize_size=resize_size, **common)
    else:
        pipe = eval_pipeline(source, device=device, crop=crop, resize_size=resize_size,
                             ten_crop=kind == "ten_crop", **common)
    pipe.build()
    return pipe

