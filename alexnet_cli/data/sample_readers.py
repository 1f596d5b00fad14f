"""One sample's JPEG bytes by its index in a split: from its own file, or from a packed shard by offset.

A reader is pickled into each of DALI's worker processes, so it carries arrays and names only and opens what
it reads lazily, in the process that reads: a file per read, a shard once per process (``os.pread`` then
needs no seek and no lock). ``opened`` counts the opens, for the loader's tally. This module imports numpy
only: every worker process imports it.
"""

import errno
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

# A packed split's index: one row per sample, in the unpacked dataset's order (class index, then name).
INDEX_DTYPE = np.dtype([("shard", "<u4"), ("offset", "<u8"), ("size", "<u4"), ("label", "<u4"), ("crc32", "<u4")])
# Shards a reader keeps open at once, the least recently read closed first: ImageNet's ~140 shards of 1 GB all stay
# open, and small shards (--shard-size 16M: thousands) stay within the usual limit of 1,024 open files a process.
MAX_OPEN_SHARDS = 256


class ShardMissing(Exception):
    """A shard could not be opened: every sample in it is gone, which no stand-in can hide."""


@dataclass
class FileReader:
    """Samples stored one JPEG per file: ``paths`` are bytes after the prefix ``root`` (a compact array
    pickles fast into each worker, where 1.28 M strings would not)."""

    root: str
    paths: np.ndarray
    opened: int = 0
    damage = "is unreadable or not a whole JPEG"  # what a problem at read means, for the loader's warning

    @classmethod
    def of(cls, files: list[str]) -> "FileReader":
        """The common folder with its trailing separator, and each path after it. The shortest and longest
        strings bound every common prefix."""
        prefix = os.path.commonprefix([min(files), max(files)]) if files else ""
        root = prefix[: prefix.rfind(os.sep) + 1]
        return cls(root, np.array([f[len(root):].encode() for f in files], dtype=bytes))

    def __len__(self) -> int:
        return len(self.paths)

    def fresh(self) -> "FileReader":
        """A reader of its own for one pipeline, its count at 0."""
        return replace(self, opened=0)

    @property
    def location(self) -> str:
        return self.root

    def name(self, index: int) -> str:
        return self.root + self.paths[index].decode()

    def describe(self, index: int) -> str:
        return self.name(index)

    def read(self, index: int) -> np.ndarray:
        """The file's bytes; OSError if it cannot be read."""
        self.opened += 1
        return np.fromfile(self.name(index), dtype=np.uint8)

    def close(self) -> None:
        """Nothing stays open between reads."""


@dataclass
class ShardReader:
    """Samples packed into tar shards (see ``packed``): row ``i`` of ``index`` says where sample ``i`` lies.

    ``folder`` ends with a separator; ``keys`` (the member names without ``.jpg``) is read from ``keys_path``
    only to name a sample in a message, never in a worker's read.
    """

    folder: str
    shards: tuple[str, ...]
    index: np.ndarray  # INDEX_DTYPE
    keys_path: str
    opened: int = 0
    damage = "is cut short, differs from the crc32 its index holds, or is not a whole JPEG"
    _handles: OrderedDict[int, int] = field(default_factory=OrderedDict, repr=False)
    _keys: np.ndarray | None = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        # A worker opens its own descriptors; a parent's numbers mean nothing in another process.
        return {**self.__dict__, "_handles": OrderedDict(), "_keys": None, "opened": 0}

    def __del__(self) -> None:
        if getattr(self, "_handles", None):  # a reader dropped without close() (a loader never closed)
            self.close()

    def __len__(self) -> int:
        return len(self.index)

    def fresh(self) -> "ShardReader":
        """A reader of its own for one pipeline: no shard open yet, its count at 0."""
        return replace(self, _handles=OrderedDict(), opened=0)

    @property
    def location(self) -> str:
        return self.folder

    def shard_path(self, index: int) -> str:
        return self.folder + self.shards[int(self.index["shard"][index])]

    def key(self, index: int) -> str:
        if self._keys is None:
            self._keys = np.load(self.keys_path, mmap_mode="r")
        return self._keys[index].decode()

    def name(self, index: int) -> str:
        """``SHARD.tar:KEY.jpg``: the shard and the member, as ``tar`` lists it."""
        return f"{self.shard_path(index)}:{self.key(index)}.jpg"

    def describe(self, index: int) -> str:
        offset = int(self.index["offset"][index])
        return f"{self.shard_path(index)}: sample {index} ({self.key(index)}) at offset {offset}"

    def read(self, index: int) -> np.ndarray:
        """The member's bytes; OSError if they are cut short or differ from the crc32 the index holds (a
        damaged sample: the loader stands in for it or leaves it out, and names it with ``describe``),
        ``ShardMissing`` if the shard is gone."""
        row = self.index[index]
        data = os.pread(self._handle(int(row["shard"]), index), int(row["size"]), int(row["offset"]))
        if len(data) != row["size"] or zlib.crc32(data) != row["crc32"]:
            raise OSError("damaged sample")
        return np.frombuffer(data, dtype=np.uint8)

    def _handle(self, shard: int, index: int) -> int:
        handle = self._handles.get(shard)
        if handle is not None:
            self._handles.move_to_end(shard)
            return handle
        if len(self._handles) >= MAX_OPEN_SHARDS:
            os.close(self._handles.popitem(last=False)[1])
        path = self.folder + self.shards[shard]
        try:
            handle = os.open(path, os.O_RDONLY)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise ShardMissing(f"{path} cannot be opened: this process has too many files open; raise the "
                                   "open-files limit (ulimit -n) or use fewer data.py_workers") from None
            raise ShardMissing(f"{path} cannot be opened ({exc.strerror}) to read sample {index} at offset "
                               f"{int(self.index['offset'][index])}: restore the shard or pack the dataset "
                               "again") from None
        self._handles[shard] = handle
        self.opened += 1
        return handle

    def close(self) -> None:
        handles, self._handles = self._handles, OrderedDict()
        for handle in handles.values():
            os.close(handle)
