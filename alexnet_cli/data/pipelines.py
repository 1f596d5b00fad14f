"""The DALI pipelines: training (§4.1 augmentation), centre crop and ten-crop evaluation.

One graph serves CPU and GPU: ``device`` picks the decoder ("cpu" or "mixed")
and the operators' device, nothing else changes, so the CPU tests cover the
GPU path's logic. Inputs come through one parallel ``external_source`` fed by a
``BatchFeed`` (see ``feed``) that decides, from the seed, which files make each
batch and every random choice (crop offset, flip, PCA α), and reads the files in
DALI's Python worker processes, off the training thread. That makes an epoch's
batches a pure function of (seed, epoch, step): reproducible, shardable exactly,
and resumable mid-epoch. The feed's outputs are named once, by ``feed.TrainBatch``
and ``feed.EvalBatch``; the graphs read them by those names.

Outputs: images (on ``device``), labels (on ``device``) and the feed's per-sample
``BATCH_INFO`` rows (always on the CPU; the loader reads them).
With a per-pixel mean image (``Normalization.mean_image``, §2) the graph crops and mirrors the mean exactly
like each image and subtracts it, on ``device``.
"""

from typing import Literal

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

from alexnet_cli.data.feed import EvalBatch, TrainBatch
from alexnet_cli.data.pipeline_options import PipelineOptions
from alexnet_cli.devices import DeviceName

Kind = Literal["train", "val", "ten_crop"]


def _decoder(options: PipelineOptions) -> dict:
    """Decode on the GPU (nvJPEG, "mixed") or the CPU (libjpeg-turbo). nvJPEG's own chroma upsampling
    differs from libjpeg-turbo's at colour edges (measured on an H100: mean ~0.5, max ~77 levels of
    255); ``exact_decode`` makes it upsample like libjpeg-turbo (max 2 levels), 3.3× slower there.
    ``hw_decoder_load``: the share of each batch sent to the GPU's hardware JPEG engines (A100, H100,
    H200), the rest to nvJPEG's CUDA decoder, which competes with training for the SMs."""
    if options.device == "gpu":
        return {"device": "mixed", "jpeg_fancy_upsampling": options.exact_decode,
                "hw_decoder_load": options.hw_decoder_load}
    return {"device": "cpu"}


def _maybe_resize(images, device: DeviceName, resize_size: int | None):
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


def _feed(source, outputs: type[EvalBatch] | type[TrainBatch], py_workers: int):
    """The external source's outputs as the graph's nodes, named like the feed's (``outputs``)."""
    # One batch per worker call (eval's last batch may be short, which only batch mode allows), and
    # at least one batch in the making per worker.
    ahead = {"parallel": True, "prefetch_queue_depth": max(2, py_workers)} if py_workers > 0 else {}
    nodes = fn.external_source(source=source, num_outputs=len(outputs._fields), batch=True, batch_info=True,
                               **ahead)
    return outputs(*nodes)


def _labels_on(labels, device: DeviceName):
    """Labels leave the graph where the images do: on the GPU a copy inside DALI's stream."""
    return labels.gpu() if device == "gpu" else labels


def _mean_crop(mean_image: np.ndarray, device: DeviceName, crop: int, x, y, mirror):
    """The per-pixel mean image (HWC) cropped at (x, y) and mirrored like the image it is taken from."""
    mean = types.Constant(mean_image.astype(np.float32), device=device, layout="HWC")
    return fn.crop_mirror_normalize(mean, device=device, dtype=types.FLOAT, output_layout="CHW",
                                    crop=(crop, crop), crop_pos_x=x, crop_pos_y=y, mirror=mirror)


@pipeline_def(enable_conditionals=False)
def train_pipeline(source, options: PipelineOptions):
    """Random ``crop``×``crop`` crop, random mirror, mean subtraction and PCA colour shift (§4.1).

    ``source`` yields a ``TrainBatch`` per batch: the choices come drawn, the graph applies them.
    """
    device, crop, mean_image = options.device, options.crop, options.normalization.mean_image
    batch = _feed(source, TrainBatch, options.py_workers)
    if options.resize_size is None and options.roi_decode:
        # The stored image is already at the resize size: decode just the crop (ROI decoding).
        images = fn.decoders.image_crop(batch.jpegs, **_decoder(options), output_type=types.RGB, crop=(crop, crop),
                                        crop_pos_x=batch.pos_x, crop_pos_y=batch.pos_y)
        crop_args = {}
    else:
        images = fn.decoders.image(batch.jpegs, **_decoder(options), output_type=types.RGB)
        images = _maybe_resize(images, device, options.resize_size)
        crop_args = {"crop": (crop, crop), "crop_pos_x": batch.pos_x, "crop_pos_y": batch.pos_y}
    images = fn.crop_mirror_normalize(images, device=device, dtype=types.FLOAT, output_layout="CHW",
                                      mean=batch.mean, std=batch.std, mirror=batch.mirror, **crop_args)
    if mean_image is not None:
        images = images - _mean_crop(mean_image, device, crop, batch.pos_x, batch.pos_y, batch.mirror)
    return images, _labels_on(batch.labels, device), batch.batch_info


@pipeline_def(enable_conditionals=False)
def eval_pipeline(source, options: PipelineOptions, *, ten_crop: bool):
    """Centre crop, or the paper's ten crops stacked as ``[10, 3, crop, crop]`` per image in
    torchvision's ``TenCrop`` order: top-left, top-right, bottom-left, bottom-right, centre, then the same mirrored."""
    device, crop, mean_image = options.device, options.crop, options.normalization.mean_image
    batch = _feed(source, EvalBatch, options.py_workers)
    images = fn.decoders.image(batch.jpegs, **_decoder(options), output_type=types.RGB)
    images = _maybe_resize(images, device, options.resize_size)
    centre_x, centre_y = _centre_position(images, crop)
    positions = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (centre_x, centre_y)]
    if not ten_crop:
        positions = positions[-1:]
    # torchvision mirrors the whole image and then takes the five crops, so each mirrored crop
    # comes from the horizontally opposite position (1 − x) of the unmirrored image.
    placements = [(x, y, 0) for x, y in positions]
    if ten_crop:
        placements += [(1.0 - x, y, 1) for x, y in positions]
    crops = []
    for x, y, flip in placements:
        image = fn.crop_mirror_normalize(images, device=device, dtype=types.FLOAT, output_layout="CHW",
                                         crop=(crop, crop), crop_pos_x=x, crop_pos_y=y, mean=batch.mean,
                                         std=batch.std, mirror=flip)
        if mean_image is not None:
            image = image - _mean_crop(mean_image, device, crop, x, y, flip)
        crops.append(image)
    return (fn.stack(*crops) if ten_crop else crops[0]), _labels_on(batch.labels, device), batch.batch_info


def build_pipeline(kind: Kind, source, options: PipelineOptions, *, batch_size: int) -> Pipeline:
    """Build one of the pipelines, fed by ``source`` (a ``feed.BatchFeed``), ``batch_size`` samples a batch.

    With ``options.py_workers`` 0 the training thread reads the files, as DALI's sequential source does.
    Without ``roi_decode`` (or when the pipeline resizes) training decodes the whole image and crops it afterwards.
    """
    common = dict(batch_size=batch_size, num_threads=options.num_threads, seed=options.seed,
                  prefetch_queue_depth=options.prefetch,
                  device_id=options.device_id if options.device == "gpu" else None, py_start_method="spawn",
                  py_num_workers=max(1, options.py_workers))
    if kind == "train":
        pipe = train_pipeline(source, options, **common)
    else:
        pipe = eval_pipeline(source, options, ten_crop=kind == "ten_crop", **common)
    pipe.build()
    return pipe

