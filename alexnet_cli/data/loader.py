"""Feeding DALI from a ``ShardPlan`` and handing its outputs to PyTorch as an iterable loader.

DALI prefetches: it asks the feed for batches before the model asks the loader.
The feed records the (epoch, step) of each batch it hands out; the loader pops
them in the same order, so it always knows which batch it is returning, can
skip stale prefetched batches when an epoch was cut short, and can restart at
any (epoch, step) after a resume.
"""

import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF

from alexnet_cli.data.pipelines import build_pipeline
from alexnet_cli.data.sampling import Augmentation, ShardPlan
from alexnet_cli.errors import AlexnetError

Kind = Literal["train", "val", "ten_crop"]


@dataclass(frozen=True)
class Normalization:
    """Subtract ``channel_mean`` and divide by ``channel_std`` (0–255 units), or, in the paper's
    way (§2), subtract a per-pixel ``mean_image`` of the stored size and divide by nothing."""

    channel_mean: np.ndarray
    channel_std: np.ndarray
    mean_image: np.ndarray | None = None


class _Feed:
    """The external source: turns the next scheduled (epoch, step) into a batch of inputs."""

    def __init__(self, loader: "DaliLoader") -> None:
        self.loader = loader

    def __call__(self, batch_info) -> tuple:
        loader = self.loader
        epoch, step = next(loader._schedule)
        indices = loader.plan.batch_indices(epoch, step)
        jpegs = [loader._read_jpeg(i) for i in indices]
        if any(data is None for data in jpegs):
            readable = {i: data for i, data in zip(indices, jpegs) if data is not None}
            indices = _replace_unreadable(indices, jpegs)
            jpegs = [readable[i] for i in indices]
        labels = [np.array(loader.labels[i], dtype=np.int64) for i in indices]
        count = len(indices)
        norm = loader.normalization
        mean = np.zeros(3, np.float32) if norm.mean_image is not None else norm.channel_mean.astype(np.float32)
        std = np.ones(3, np.float32) if norm.mean_image is not None else norm.channel_std.astype(np.float32)
        if loader.kind != "train":
            loader._pending.append((epoch, step, None))
            return jpegs, labels, [mean] * count, [std] * count
        aug = loader.augmentation.draw(epoch, step, loader.plan.shard_id, count)
        loader._pending.append((epoch, step, aug))
        return (jpegs, labels, list(aug["position"][:, 0]), list(aug["position"][:, 1]),
                list(aug["mirror"]), [mean - shift for shift in aug["shift"]], [std] * count)


class DaliLoader:
    """An iterable of ``(images, labels)`` batches for one split on one rank.

    ``len()`` is the number of batches per epoch; each ``iter()`` is one epoch.
    Images are float32 CHW on ``torch_device``; ten-crop batches are ``[B, 10, 3, H, W]``.
    Image tensors are reused after ``_RING`` batches: ``.clone()`` a batch to keep it longer.
    """

    def __init__(self, kind: Kind, files: list[Path], labels: list[int], plan: ShardPlan, *,
                 normalization: Normalization, augmentation: Augmentation | None, crop: int,
                 resize_size: int | None, device: Literal["cpu", "gpu"], device_id: int | None,
                 num_threads: int, prefetch: int, seed: int) -> None:
        self.kind, self.files, self.labels, self.plan = kind, [str(f) for f in files], labels, plan
        self.normalization, self.augmentation = normalization, augmentation
        self.crop, self.resize_size = crop, resize_size
        self.device, self.device_id = device, device_id
        self.num_threads, self.prefetch, self.seed = num_threads, prefetch, seed
        self.torch_device = torch.device("cuda", device_id or 0) if device == "gpu" else torch.device("cpu")
        self.epoch, self.step = 0, 0  # the next batch to return
        self.damaged: set[str] = set()  # files found unreadable, each reported once
        self._iterating = False  # an epoch is under way (or was abandoned part-way)
        self._pipe = None
        self._ring: list[torch.Tensor | None] = [None] * _RING
        self._batches_out = 0
        self._pending: deque = deque()
        self._schedule = iter(())
        self._mean_image = None
        if normalization.mean_image is not None:
            self._mean_image = torch.as_tensor(normalization.mean_image).permute(2, 0, 1).contiguous()

    def __len__(self) -> int:
        return self.plan.steps_per_epoch

    def close(self) -> None:
        """Stop DALI's threads now. A process forked later must not inherit a live pipeline: its
        destructor, run by the child's garbage collector, would wait for threads the child lacks."""
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            del pipe
            import gc

            gc.collect()
        self._pending.clear()

    def _read_jpeg(self, index: int) -> np.ndarray | None:
        """The file's bytes, or None (once warned) if it is unreadable or not a whole JPEG.

        The prepared data is clean; this keeps one file damaged since then from killing a
        long run mid-epoch. A whole JPEG starts with SOI (FF D8) and ends with EOI (FF D9).
        """
        path = self.files[index]
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError:
            data = None
        if data is not None and len(data) > 4 and data[0] == 0xFF and data[1] == 0xD8 \
                and (data[-2] == 0xFF and data[-1] == 0xD9):
            return data
        if path not in self.damaged:
            self.damaged.add(path)
            warnings.warn(f"{path} is unreadable or not a whole JPEG; another image of the batch stands in "
                          "for it (run 'alexnet prepare-imagenet' again to repair the dataset)", stacklevel=2)
        return None

    def position(self) -> dict:
        """Where the next batch comes from: ``{"epoch", "step"}``."""
        return {"epoch": self.epoch, "step": self.step}

    def seek(self, epoch: int, step: int = 0) -> None:
        """Continue at (epoch, step): the next ``iter()`` resumes that epoch mid-way.

        Not named ``load_state_dict`` on purpose: Lightning would then save the loader's
        own position, which runs one batch ahead of training because of its prefetch.
        """
        self.epoch, self.step = int(epoch), int(step)
        self._iterating = False

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps = len(self)
        if self._iterating or self.step >= steps:
            # The last epoch was cut short (e.g. limit_train_batches): start the next one.
            self.epoch, self.step = self.epoch + 1, 0
        if steps == 0:
            return
        self._ensure_pipeline()
        self._skip_stale(self.epoch, self.step)
        self._iterating = True
        while self.step < steps:
            batch = self._next_batch()
            self.step += 1
            yield batch
        self._iterating = False
        self.epoch, self.step = self.epoch + 1, 0

    def _keys_from(self, epoch: int, step: int):
        while True:
            for s in range(step, len(self)):
                yield epoch, s
            epoch, step = epoch + 1, 0

    def _ensure_pipeline(self) -> None:
        if self._pipe is None:
            self._schedule = self._keys_from(self.epoch, self.step)
            self._pipe = build_pipeline(
                self.kind, _Feed(self), device=self.device, batch_size=self.plan.batch_size,
                num_threads=self.num_threads, device_id=self.device_id, crop=self.crop,
                resize_size=self.resize_size, prefetch=self.prefetch, seed=self.seed,
            )

    def _skip_stale(self, epoch: int, step: int) -> None:
        """Drop prefetched batches that an interrupted epoch left behind."""
        if not self._pending or self._pending[0][:2] == (epoch, step):
            return
        self._schedule = self._keys_from(epoch, step)
        stale = len(self._pending)
        for _ in range(stale):
            self._run_pipeline()
            self._pending.popleft()

    def _run_pipeline(self):
        try:
            return self._pipe.run()
        except RuntimeError:
            misfit = self._find_misfit()  # DALI's message names no file; find the one that broke the batch
            if misfit:
                raise AlexnetError(misfit) from None
            raise

    def _find_misfit(self) -> str | None:
        """A file of the batches in flight whose size the pipeline cannot take, described for the user."""
        from PIL import Image

        stored = self.augmentation.image_size if self.augmentation is not None else None
        for epoch, step, _ in self._pending:
            for index in self.plan.batch_indices(epoch, step):
                path = self.files[index]
                try:
                    with Image.open(path) as image:
                        width, height = image.size
                except OSError:
                    continue  # unreadable files are stood in for, not fatal
                if stored is not None and (width, height) != (stored, stored):
                    return (f"{path} is {width}×{height} pixels, but this dataset's images are {stored}×{stored} "
                            "as 'alexnet prepare-imagenet' stores them: prepare the dataset again, or remove the file")
                if self.resize_size is None and min(width, height) < self.crop:
                    return (f"{path} is {width}×{height} pixels, smaller than the {self.crop}-pixel crop: prepare "
                            "the dataset again, or remove the file")
        return None

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._run_pipeline()
        epoch, step, aug = self._pending.popleft()
        assert (epoch, step) == (self.epoch, self.step), "DALI returned batches out of order"
        images = self._images_to_torch(images)
        labels = _to_torch(labels, self.torch_device).reshape(-1)
        if self._mean_image is not None:
            images = self._subtract_mean_image(images, aug)
        return images, labels

    def _images_to_torch(self, images) -> torch.Tensor:
        """Copy DALI's output into a ring of reused tensors: fresh 80 MB allocations cost more in page
        faults than the copy itself. A batch stays valid for the next ``_RING - 1`` batches, more
        than Lightning's one-batch look-ahead needs."""
        tensor = images.as_tensor()
        slot = self._batches_out % _RING
        self._batches_out += 1
        buffer = self._ring[slot]
        if buffer is None or list(buffer.shape) != tensor.shape():
            buffer = torch.empty(tensor.shape(), dtype=torch.float32, device=self.torch_device)
            self._ring[slot] = buffer
        return _copy_into(tensor, buffer)

    def _subtract_mean_image(self, images: torch.Tensor, aug: dict | None) -> torch.Tensor:
        """The paper's per-pixel mean (§2), cropped and mirrored exactly like each image."""
        mean = self._mean_image.to(images.device, non_blocking=True)
        c = self.crop
        if aug is not None:
            crops = [mean[:, y : y + c, x : x + c] for x, y in aug["offsets"]]
            crops = [m.flip(-1) if flip else m for m, flip in zip(crops, aug["mirror"])]
            return images - torch.stack(crops)
        if images.dim() == 4:  # centre crop only
            return images - TF.center_crop(mean, [c, c])
        return images - torch.stack(TF.ten_crop(mean, [c, c]))


_RING = 4  # reused image buffers per loader


def _replace_unreadable(indices: np.ndarray, jpegs: list) -> np.ndarray:
    """Stand a readable image of the same batch in for each unreadable one (keeps shapes and counts)."""
    good = [i for i, data in zip(indices, jpegs) if data is not None]
    if not good:
        raise AlexnetError(f"no image of a whole batch could be read (e.g. sample {indices[0]}); "
                           "check the dataset's disk")
    return np.array([i if data is not None else good[k % len(good)]
                     for k, (i, data) in enumerate(zip(indices, jpegs))])


def _to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    from nvidia.dali.plugin.pytorch import to_torch_type

    tensor = tensor_list.as_tensor()
    return _copy_into(tensor, torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device))


def _copy_into(tensor, out: torch.Tensor) -> torch.Tensor:
    from nvidia.dali.plugin.pytorch import feed_ndarray

    stream = torch.cuda.current_stream(out.device) if out.device.type == "cuda" else None
    return feed_ndarray(tensor, out, cuda_stream=stream)
