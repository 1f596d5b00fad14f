"""A dataset's fingerprint: a hash of every sample's split, class, file name, size and crc32, in the split's order.

Packed and unpacked twins hash alike (the same samples in the same order), so a run started on one resumes
on the other, and a resume on a different dataset is refused. Written into ``dataset.json`` by prepare and
pack, and into every checkpoint.
"""

import hashlib
import os
import zlib
from collections.abc import Iterable

from alexnet_cli.data.dataset_files import ClassInfo, SplitFiles
from alexnet_cli.progress import Progress, SilentProgress


class Fingerprint:
    """Add the samples split by split, in order; ``hexdigest`` names the whole."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add_samples(self, split: str, samples: Iterable[tuple[str, str, int, int]]) -> None:
        """(wnid, file name, size, crc32) of each of the split's samples, in its order."""
        self._hash.update("".join(f"{split}\t{wnid}\t{name}\t{size}\t{crc:08x}\n"
                                  for wnid, name, size, crc in samples).encode())

    def add_split(self, split: str, files: SplitFiles, classes: list[ClassInfo], sizes: list[int],
                  crcs: list[int]) -> None:
        """``files``' samples, with each one's size and crc32 (the bytes, wherever they are stored)."""
        samples = zip(files.files, files.labels, sizes, crcs, strict=True)
        self.add_samples(split, ((classes[label].wnid, os.path.basename(path), size, crc)
                                 for path, label, size, crc in samples))

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def fingerprint_of_files(splits: dict[str, SplitFiles], classes: list[ClassInfo],
                         progress: Progress | None = None) -> str:
    """The fingerprint of an unpacked dataset, each file read once."""
    progress = progress or SilentProgress()
    fingerprint = Fingerprint()
    for split, files in splits.items():
        sizes, crcs = [], []
        with progress.task(f"fingerprint {split}", len(files)) as task:
            for index in range(len(files)):
                data = files.read(index)
                sizes.append(len(data))
                crcs.append(zlib.crc32(data))
                task.advance()
        fingerprint.add_split(split, files, classes, sizes, crcs)
    return fingerprint.hexdigest()
