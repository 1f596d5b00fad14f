"""A split of either format (one file per image, or packed shards), as the loader and every command read it:
labels, a reader per pipeline, and a name and the bytes of any one sample."""

from pathlib import Path

from alexnet_cli.data.dataset_files import ClassInfo, SplitFiles, list_split
from alexnet_cli.data.packed import PACK_FORMAT, PackedSplit, read_packed_split
from alexnet_cli.errors import AlexnetError

Split = SplitFiles | PackedSplit


def read_split(root: Path, split: str, classes: list[ClassInfo], info: dict) -> Split:
    """``split`` of the dataset at ``root``, whose ``dataset.json`` is ``info``."""
    packed = info.get("packed")
    if not packed:
        return list_split(root, split, classes)
    written = packed.get("format") if isinstance(packed, dict) else None
    if not isinstance(written, int) or written > PACK_FORMAT:
        raise AlexnetError(f"{root / 'dataset.json'}: packed format {written!r} is not one this version reads "
                           f"(1 to {PACK_FORMAT}); upgrade alexnet-cli or pack the dataset again")
    return read_packed_split(root, split, len(classes))
