"""A dataset's fingerprint: a hash of every sample's split, class, file name, size and crc32, in the split's order.

Packed and unpacked twins hash alike (the same samples in the same order), so a run started on one resumes
on the other, and a resume on a different dataset is refused. Written into ``dataset.json`` by prepare and
pack, and into every checkpoint.
"""

import hashlib
import os
import zlib

from alexnet_cli.data.dataset_files import ClassInfo, SplitFiles
from alexnet_cli.progress import Progress, SilentProgress


class Fingerprint:
    """Add the samples split by split, in order; ``hexdigest`` names the whole."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add_split(self, split: str, files: SplitFiles, classes: list[ClassInfo], sizes: list[int],
                  crcs: list[int]) -> None:
        """``files``' samples, with each one's size and crc32 (the bytes, wherever they are stored)."""
        lines = (f"{split}\t{classes[label].wnid}\t{os.path.basename(path)}\t{size}\t{crc:08x}\n"
                 for path, label, size, crc in zip(files.files, files.labels, sizes, crcs, strict=True))
        self._hash.update("".join(lines).encode())

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def crc32_of(data: bytes) -> int:
    return zlib.crc32(data)


def fingerprint_of_files(splits: dict[str, SplitFiles], classes: list[ClassInfo],
                         progress: Progress | None = None) -> str:
    """The fingerprint of an unpacked dataset, each file read once."""
    progress = progress or SilentProgress()
    fingerprint = Fingerprint()
    for split, files in splits.items():
        sizes, crcs = [], []
        with progress.task(f"fingerprint {split}", len(files)) as task:
            for path in files.files:
                with open(path, "rb") as handle:
                    data = handle.read()
                sizes.append(len(data))
                crcs.append(crc32_of(data))
                task.advance()
        fingerprint.add_split(split, files, classes, sizes, crcs)
    return fingerprint.hexdigest()
