"""The pipeline's external source: DALI's batch number → the files, labels and random choices of
that batch, read in DALI's Python worker processes.

DALI's parallel external source calls ``BatchFeed`` with a ``BatchInfo`` from worker processes,
several batches ahead of training, so the feed is a pure function of ``info.iteration``: it
was built with the (epoch, step) its first batch stands for and the number of batches per
epoch, and maps the n-th batch after that onto (epoch, step) by arithmetic. Everything the
loader must know about a batch (which (epoch, step) it is, which files were stood in for)
comes back as the pipeline output ``BATCH_INFO``; no state is shared with the loader.

This module imports numpy only: every worker process imports it.
"""

import os
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from alexnet_cli.data.sample_readers import FileReader, ShardReader
from alexnet_cli.data.sampling import Augmentation, ShardPlan

# Columns of the per-sample int64 output that describes each batch to the loader. OPENED: the files or shards
# the batch's read opened, on its first row (0 on the others, so that the column sums to the batch's opens).
EPOCH, STEP, INDEX, PROBLEM, WIDTH, HEIGHT, OPENED = range(7)
INFO_COLUMNS = 7
# PROBLEM codes: the sample at INDEX was replaced by another image of its batch because...
READABLE, UNREADABLE, WRONG_SIZE = 0, 1, 2
SKIPPED = -1  # the label the loader gives an evaluation sample whose file could not be used


class EvalBatch(NamedTuple):
    """What the feed gives the evaluation graph for one batch, one entry per sample; the graph reads
    it by name (see ``pipelines``), and its length is the external source's number of outputs."""

    jpegs: list[np.ndarray]  # the file's bytes
    labels: np.ndarray  # int64
    mean: np.ndarray  # float32 [3], subtracted by crop_mirror_normalize
    std: np.ndarray  # float32 [3], divided by
    batch_info: np.ndarray  # int64 [INFO_COLUMNS], for the loader: EPOCH, STEP, INDEX, PROBLEM, ...


class TrainBatch(NamedTuple):
    """What the feed gives the training graph for one batch: ``EvalBatch``'s fields and the §4.1
    random choices drawn by ``Augmentation``, one entry per sample."""

    jpegs: list[np.ndarray]
    labels: np.ndarray
    pos_x: np.ndarray  # float32, the crop's position in [0, 1]
    pos_y: np.ndarray
    mirror: np.ndarray  # int32, 1: flip
    mean: np.ndarray  # float32 [3]: the channel mean minus the PCA shift (§4.1), one fused normalise does both
    std: np.ndarray
    batch_info: np.ndarray


@dataclass(frozen=True)
class SizeRule:
    """The image sizes the pipeline can take without a resize: exactly ``square``×``square``
    (a dataset stored at its crop's source size), or at least ``min_side`` on each side."""

    square: int | None = None
    min_side: int | None = None

    def problem(self, width: int, height: int) -> bool:
        if self.square is not None and (width, height) != (self.square, self.square):
            return True
        return self.min_side is not None and min(width, height) < self.min_side


@dataclass(frozen=True)
class BatchFeed:
    """One pipeline's source: batch ``n`` is (epoch, step) = ``start`` advanced by ``n`` batches.

    ``reader`` reads a sample's bytes by its index, from its file or its shard (each worker opens its own);
    ``steps_per_epoch`` is the loader's epoch length, which may be cut shorter than the plan's.
    """

    reader: FileReader | ShardReader
    labels: np.ndarray
    plan: ShardPlan
    augmentation: Augmentation | None
    channel_mean: np.ndarray  # float32 [3], subtracted by crop_mirror_normalize
    channel_std: np.ndarray  # float32 [3]
    sizes: SizeRule
    start_epoch: int
    start_step: int
    steps_per_epoch: int

    def __setstate__(self, state: dict) -> None:
        # Unpickled only in a DALI worker process: the place to tie the worker's life to its parent's.
        self.__dict__.update(state)
        _exit_with_parent()

    def key(self, iteration: int) -> tuple[int, int]:
        """(epoch, step) of the pipeline's ``iteration``-th batch."""
        offset = self.start_step + iteration
        return self.start_epoch + offset // self.steps_per_epoch, offset % self.steps_per_epoch

    def __call__(self, info) -> EvalBatch | TrainBatch:
        epoch, step = self.key(info.iteration)
        indices = self.plan.batch_indices(epoch, step)
        opened = self.reader.opened
        jpegs, problems = self._read(indices)
        sources = _stand_ins(indices, problems[:, 0])
        jpegs = [jpegs[k] for k in sources]
        count = len(indices)
        batch_info = np.zeros((count, INFO_COLUMNS), np.int64)
        batch_info[:, EPOCH], batch_info[:, STEP], batch_info[:, INDEX] = epoch, step, indices
        batch_info[:, PROBLEM:OPENED] = problems
        batch_info[0, OPENED] = self.reader.opened - opened
        labels = self.labels[indices[sources]]
        std = np.tile(self.channel_std, (count, 1))
        if self.augmentation is None:
            return EvalBatch(jpegs=jpegs, labels=labels, mean=np.tile(self.channel_mean, (count, 1)), std=std,
                             batch_info=batch_info)
        aug = self.augmentation.draw(epoch, step, self.plan.shard_id, count)
        # The PCA shift (§4.1) is added by subtracting it from the mean: one fused normalise does both.
        mean = (self.channel_mean - aug["shift"]).astype(np.float32)
        pos_x, pos_y = np.ascontiguousarray(aug["position"].T)
        return TrainBatch(jpegs=jpegs, labels=labels, pos_x=pos_x, pos_y=pos_y, mirror=aug["mirror"], mean=mean,
                          std=std, batch_info=batch_info)

    def _read(self, indices: np.ndarray) -> tuple[list, np.ndarray]:
        """Each sample's bytes and ``[problem, width, height]``: a damaged sample or one of a size the
        pipeline cannot take is found here, from its header, rather than by DALI failing later."""
        jpegs, problems = [], np.zeros((len(indices), 3), np.int64)
        for k, index in enumerate(indices):
            try:
                data = self.reader.read(index)
            except OSError:
                data = np.zeros(0, np.uint8)
            size = jpeg_size(data) if _is_whole_jpeg(data) else None
            if size is None:
                problems[k, 0] = UNREADABLE
            elif self.sizes.problem(*size):
                problems[k] = (WRONG_SIZE, *size)
            jpegs.append(data)
        return jpegs, problems


_watching = threading.Event()


def _exit_with_parent() -> None:
    """End this worker process when its parent is gone. DALI's workers wait on a shared-memory queue
    and never notice a parent killed with SIGKILL (Lightning's launcher does that to every rank when
    one dies): they would live on, holding the parent's stdout and stderr open."""
    if _watching.is_set():
        return
    _watching.set()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _is_whole_jpeg(data: np.ndarray) -> bool:
    """A whole JPEG starts with SOI (FF D8) and ends with EOI (FF D9): a cut-off copy does not."""
    return len(data) > 4 and data[0] == 0xFF and data[1] == 0xD8 and data[-2] == 0xFF and data[-1] == 0xD9


# Start-of-frame markers (baseline, progressive, lossless...), which hold the image's size;
# C4 (Huffman tables), C8 (reserved) and CC (arithmetic coding) share the range but are not frames.
_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI, EOI: no length field


def jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the marker segments; None if malformed."""
    raw = data.tobytes()
    end, i = len(raw), 2
    while i + 4 <= end:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE_MARKERS:
            i += 2
            continue
        if marker in _FRAME_MARKERS:
            if i + 9 > end:
                return None
            height, width = raw[i + 5] << 8 | raw[i + 6], raw[i + 7] << 8 | raw[i + 8]
            return (width, height) if width and height else None
        i += 2 + (raw[i + 2] << 8 | raw[i + 3])
    return None


def _stand_ins(indices: np.ndarray, problems: np.ndarray) -> np.ndarray:
    """For each sample, the position in the batch of the image that fills it: its own, or (for a
    file the pipeline cannot take) another of the batch, which keeps shapes and counts intact."""
    good = [k for k in range(len(indices)) if problems[k] == READABLE]
    if not good:
        raise RuntimeError(f"no image of a whole batch could be read or used (e.g. sample {indices[0]})")
    return np.array([k if problems[k] == READABLE else good[k % len(good)] for k in range(len(indices))])
