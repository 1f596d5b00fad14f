"""A dataset's fingerprint: a hash of every sample's split, class, name, size and crc32, in the split's order.

Packed and unpacked twins hash alike (the same samples in the same order), so a run started on one resumes
on the other, and a resume on a different dataset is refused. Written into ``dataset.json`` by prepare and
pack, and into every checkpoint.
"""

import hashlib
import zlib
from collections.abc import Iterable


class Fingerprint:
    """Add the samples in order, split by split; ``hexdigest`` names the whole."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, split: str, wnid: str, name: str, size: int, crc32: int) -> None:
        self._hash.update(f"{split}\t{wnid}\t{name}\t{size}\t{crc32:08x}\n".encode())

    def add_many(self, split: str, records: Iterable[tuple[str, str, int, int]]) -> None:
        for wnid, name, size, crc32 in records:
            self.add(split, wnid, name, size, crc32)

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def crc32_of(data: bytes) -> int:
    return zlib.crc32(data)
