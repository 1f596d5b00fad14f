"""A DALI pipeline as an iterable loader of ``(images, labels)`` torch batches.

DALI prefetches, and its worker processes read files several batches ahead of training.
Each pipeline is built for one sequence of batches: from a start (epoch, step) onwards,
``len(loader)`` batches an epoch (see ``feed.BatchFeed``). The loader checks every batch's
(epoch, step) against the one it must return next, and builds a new pipeline only when it
has to jump: at the first batch, after ``seek`` (a resume), or after an epoch was cut short
by someone other than the loader. Both outputs reach PyTorch without a copy (DLPack), on
the device the pipeline ran on, which is checked at the hand-off.
"""

import gc
import time
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from nvidia.dali.backend import TensorListGPU

from alexnet_cli.data import feed as F
from alexnet_cli.data.pipeline_options import PipelineOptions
from alexnet_cli.data.pipelines import Kind, build_pipeline
from alexnet_cli.data.sample_readers import ShardMissing
from alexnet_cli.data.sampling import Augmentation, ShardPlan
from alexnet_cli.data.splits import Split
from alexnet_cli.devices import torch_device
from alexnet_cli.errors import AlexnetError


class DaliLoader:
    """An iterable of ``(images, labels)`` batches for one split on one rank.

    ``len()`` is the number of batches per epoch (``steps_per_epoch`` if given and smaller than the
    plan's); each ``iter()`` is one epoch. Images are float32 CHW on ``torch_device``; ten-crop
    batches are ``[B, 10, 3, H, W]``. A batch stays valid for as long as it is referenced.
    In an evaluation a file that cannot be used is never replaced: its sample keeps a stand-in's
    pixels (the batch keeps its shape) but gets the label ``feed.SKIPPED``, which every metric ignores.
    """

    def __init__(self, kind: Kind, split: Split, plan: ShardPlan, options: PipelineOptions, *,
                 steps_per_epoch: int | None = None) -> None:
        self.kind, self.split, self.plan, self.options = kind, split, plan, options
        self.steps = plan.steps_per_epoch if steps_per_epoch is None else min(steps_per_epoch, plan.steps_per_epoch)
        self.torch_device = torch_device(options.device, options.device_id or 0)
        self.epoch, self.step = 0, 0  # the next batch to return
        self.damaged: set[str] = set()  # samples stood in for (training) or skipped (evaluation), each reported once
        self.pipelines_built = 0
        self.files_opened = 0  # files (or shards) the batches returned so far opened, in whichever process read
        # Seconds the calling thread spent blocked inside DALI's run(): on a GPU, with the outputs ordered on
        # the training stream, only the host side of the pipeline (file reads, the decoder's CPU stage).
        self.host_wait_seconds = 0.0
        self._iterating = False  # an epoch is under way (or was abandoned part-way)
        self._pipe = None
        self._pipe_source: F.BatchFeed | None = None  # what the pipeline's workers were given
        self._due: tuple[int, int] | None = None  # (epoch, step) of the pipeline's next batch
        self._reader = split.reader()  # one per loader: making it costs ~1 s at 1.28 M files
        self._label_array = np.asarray(split.labels, dtype=np.int64)

    def __len__(self) -> int:
        return self.steps

    # The options callers look at (the benchmark's twin draws like the pipeline; tests check the queue).
    @property
    def augmentation(self) -> Augmentation | None:
        return self.options.augmentation

    @property
    def prefetch(self) -> int:
        return self.options.prefetch

    @property
    def num_threads(self) -> int:
        return self.options.num_threads

    @property
    def py_workers(self) -> int:
        return self.options.py_workers

    def close(self) -> None:
        """Stop DALI's threads and worker processes now. A process forked later must not inherit a live
        pipeline: its destructor, run by the child's garbage collector, would wait for threads it lacks."""
        if self._pipe is not None:
            pipe, self._pipe, self._due = self._pipe, None, None
            del pipe
            gc.collect()
        if self._pipe_source is not None:
            self._pipe_source.reader.close()  # where the training thread read the shards itself

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
        self._iterating = True
        while self.step < steps:
            batch = self._next_batch()
            self.step += 1
            yield batch
        self._iterating = False
        self.epoch, self.step = self.epoch + 1, 0

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = (self.epoch, self.step)
        if self._pipe is None or self._due != wanted:
            self._start_at(*wanted)
        images, labels, info = self._run()
        info = np.asarray(info.as_tensor())
        got = (int(info[0, F.EPOCH]), int(info[0, F.STEP]))
        if got != wanted:
            raise RuntimeError(f"DALI returned batch (epoch, step) {got} where {wanted} was due")
        self._due = (self.epoch, self.step + 1) if self.step + 1 < len(self) else (self.epoch + 1, 0)
        self._report_problems(info)
        self.files_opened += int(info[:, F.OPENED].sum())
        labels = hand_off(labels, self.torch_device).reshape(-1)
        unusable = np.flatnonzero(info[:, F.PROBLEM] != F.READABLE)
        if self.kind != "train" and len(unusable):  # rare: the copy of a few indices costs nothing
            labels = labels.clone()
            labels[torch.as_tensor(unusable, device=self.torch_device)] = F.SKIPPED
        return hand_off(images, self.torch_device), labels

    def _start_at(self, epoch: int, step: int) -> None:
        """A new pipeline whose first batch is (epoch, step)."""
        self.close()
        norm = self.options.normalization
        per_pixel = norm.mean_image is not None  # the graph subtracts it; the channel terms are 0 and 1
        source = F.BatchFeed(
            reader=self._reader.fresh(), labels=self._label_array, plan=self.plan,
            augmentation=self.options.augmentation,
            channel_mean=np.zeros(3, np.float32) if per_pixel else np.asarray(norm.channel_mean, np.float32),
            channel_std=np.ones(3, np.float32) if per_pixel else np.asarray(norm.channel_std, np.float32),
            sizes=self._size_rule(), start_epoch=epoch, start_step=step, steps_per_epoch=len(self))
        self._pipe = build_pipeline(self.kind, source, self.options, batch_size=self.plan.batch_size)
        self._due = (epoch, step)
        self._pipe_source = source
        self.pipelines_built += 1

    def _size_rule(self) -> F.SizeRule:
        options = self.options
        if options.resize_size is not None:
            return F.SizeRule()  # the pipeline resizes: any size will do
        stored = options.augmentation.image_size if options.augmentation is not None else None
        return F.SizeRule(square=stored, min_side=options.crop)

    def _run(self):
        # On a GPU the outputs come ordered on the stream training runs on: the host does not wait for
        # DALI's kernels, the training kernels queued next do (the default, no stream, syncs the host).
        stream = torch.cuda.current_stream(self.torch_device) if self.torch_device.type == "cuda" else None
        started = time.perf_counter()
        try:
            return self._pipe.run(stream)
        except ShardMissing as exc:  # read by the training thread itself
            raise AlexnetError(str(exc)) from None
        except Exception as exc:  # DALI re-raises a worker's error with its own wrapping
            if said := _worker_error(str(exc)):
                raise AlexnetError(said) from None
            if "no image of a whole batch" in str(exc):
                raise AlexnetError(f"no image of a whole batch under {self._reader.location} could be read: check "
                                   "the dataset's disk, or prepare it again") from None
            raise
        finally:
            self.host_wait_seconds += time.perf_counter() - started

    def _report_problems(self, info: np.ndarray) -> None:
        for row in info[info[:, F.PROBLEM] != F.READABLE]:
            path = self.split.describe(int(row[F.INDEX]))
            if row[F.PROBLEM] == F.UNREADABLE:
                problem = f"{path} {self._reader.damage}"
            else:
                width, height = int(row[F.WIDTH]), int(row[F.HEIGHT])
                rule = self._size_rule()
                wanted = (f"this dataset's images are {rule.square}×{rule.square} as 'alexnet prepare-imagenet' "
                          "stores them" if rule.square else f"the crop is {self.options.crop} pixels")
                problem = f"{path} is {width}×{height} pixels, but {wanted}"
            if path not in self.damaged:
                self.damaged.add(path)
                # An evaluation scores only what it read: a stand-in would count another image twice.
                instead = ("another image of the batch stands in for it" if self.kind == "train" else
                           "it is left out of the evaluation")
                warnings.warn(f"{problem}; {instead} (run 'alexnet prepare-imagenet' again to repair the dataset)",
                              stacklevel=3)


def hand_off(output, device: torch.device) -> torch.Tensor:
    """A DALI output as a torch tensor on ``device``, without a copy (DLPack, ordered on the current
    CUDA stream). Refuses an output that is not already on ``device``: a host buffer treated as
    device memory (or the reverse) would crash or corrupt the first GPU batch."""
    on_gpu = isinstance(output, TensorListGPU)
    if on_gpu != (device.type == "cuda"):
        where = "GPU" if on_gpu else "CPU"
        raise RuntimeError(f"a DALI output on the {where} cannot become a tensor on {device}: move it in the "
                           f"pipeline ('.gpu()') or copy it with .to({str(device)!r}, non_blocking=True)")
    tensor = torch.from_dlpack(output.as_tensor())
    if tensor.device != device:
        raise RuntimeError(f"a DALI output on {tensor.device} cannot become a tensor on {device}: "
                           "build the pipeline with that device_id")
    return tensor


def _worker_error(message: str) -> str | None:
    """The one line a feed raised in a DALI worker, out of DALI's wrapping of it (which quotes the worker's
    traceback); None for any other error."""
    marker = f"{ShardMissing.__name__}: "
    at = message.find(marker)
    return message[at + len(marker):].splitlines()[0] if at >= 0 else None
