"""A packed dataset on disk: each split's JPEGs in tar shards, read by offset (``alexnet pack`` writes it).

    DIR/dataset.json          the unpacked dataset's, plus "packed": {"format": 1, "shard_bytes": ...}
    DIR/classes.json, stats.npz, report.json   as the unpacked dataset's
    DIR/<split>/000000.tar    webdataset convention: <key>.jpg (the prepared JPEG's bytes), <key>.cls (the label)
    DIR/<split>/000000.idx    DALI's index of that shard (v1.2, as DALI's wds2idx writes it)
    DIR/<split>/index.npy     one ``sample_readers.INDEX_DTYPE`` row per sample: shard, offset, size, label, crc32
    DIR/<split>/keys.npy      each sample's key: ``<wnid>/<file stem>``, dots made underscores

Rows are in the unpacked dataset's order (class index, then file name), so the (seed, epoch, step) order of
``sampling`` picks the same images from either. A shard holds consecutive samples of that order.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_cli.data.sample_readers import INDEX_DTYPE, ShardReader
from alexnet_cli.errors import AlexnetError

PACK_FORMAT = 1
INDEX_FILE, KEYS_FILE = "index.npy", "keys.npy"


def shard_name(number: int) -> str:
    return f"{number:06d}.tar"


def dali_index_name(number: int) -> str:
    return f"{number:06d}.idx"


@dataclass(frozen=True)
class PackedSplit:
    """One packed split: its labels, and a reader per pipeline (each opens its own shards)."""

    template: ShardReader

    @property
    def labels(self) -> np.ndarray:
        return self.template.index["label"]

    def __len__(self) -> int:
        return len(self.template)

    def reader(self) -> ShardReader:
        return self.template.fresh()

    def name(self, index: int) -> str:
        return self.template.name(index)

    def describe(self, index: int) -> str:
        return self.template.describe(index)

    def read(self, index: int) -> bytes:
        reader = self.reader()
        try:
            return reader.read(index).tobytes()
        finally:
            reader.close()

    @property
    def shard_paths(self) -> list[str]:
        return [self.template.folder + name for name in self.template.shards]


def read_packed_split(root: Path, split: str, num_classes: int) -> PackedSplit:
    """The split's index, checked against its shards: a shard missing or shorter than the samples it holds is
    refused here, in one line naming it and its first sample out of reach, before any worker reads it."""
    folder = root / split
    path = folder / INDEX_FILE
    try:
        index = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise AlexnetError(f"{path} not found: {root} is a packed dataset without its {split} index; pack it "
                           "again") from None
    except ValueError as exc:
        raise AlexnetError(f"{path} is damaged ({exc}); pack the dataset again") from None
    if index.dtype != INDEX_DTYPE or index.ndim != 1 or not len(index):
        raise AlexnetError(f"{path} is not a packed index of this version ({index.dtype}); pack the dataset again")
    if index["label"].max() >= num_classes:
        raise AlexnetError(f"{path} labels a sample {int(index['label'].max())}, but classes.json lists "
                           f"{num_classes} classes; pack the dataset again")
    _check_keys(folder / KEYS_FILE, len(index))
    shards = tuple(shard_name(k) for k in range(int(index["shard"].max()) + 1))
    check_shards(folder, shards, index)
    return PackedSplit(ShardReader(f"{folder}{os.sep}", shards, index, str(folder / KEYS_FILE)))


def _check_keys(path: Path, samples: int) -> None:
    """The keys name samples in messages and eval's lists: refused here rather than met missing there."""
    try:
        keys = np.load(path, mmap_mode="r", allow_pickle=False)
    except (FileNotFoundError, ValueError) as exc:
        raise AlexnetError(f"{path} is missing or damaged ({exc.__class__.__name__}); pack the dataset again") from None
    if keys.shape != (samples,):
        raise AlexnetError(f"{path} names {len(keys)} samples where the index holds {samples}; pack the dataset again")


def check_shards(folder: Path, shards: tuple[str, ...], index: np.ndarray) -> None:
    """Every shard present and long enough for the samples the index puts in it (sizes only: the crc32 of each
    sample is checked where it is read). A shard's samples are consecutive rows, which ``pack`` guarantees."""
    starts = np.searchsorted(index["shard"], np.arange(len(shards) + 1))
    if np.any(np.diff(index["shard"].astype(np.int64)) < 0) or np.any(np.diff(starts) == 0):
        raise AlexnetError(f"{folder / INDEX_FILE} does not list its shards' samples in order; pack the dataset again")
    ends = index["offset"] + index["size"]
    needed = np.maximum.reduceat(ends, starts[:-1])
    for number, name in enumerate(shards):
        path, first = folder / name, int(starts[number])
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise AlexnetError(f"{path} not found: it holds samples {first}..{int(starts[number + 1]) - 1} (sample "
                               f"{first} at offset {int(index['offset'][first])}); restore it or pack the dataset "
                               "again") from None
        if size < needed[number]:
            cut = first + int(np.flatnonzero(ends[first:starts[number + 1]] > size)[0])
            raise AlexnetError(f"{path} is truncated ({size} bytes): sample {cut} at offset "
                               f"{int(index['offset'][cut])} lies past its end; restore it or pack the dataset again")
