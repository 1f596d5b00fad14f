"""The prepared dataset on disk, as every other part of the tool reads it.

    DIR/classes.json         [{"index": 0, "wnid": "n01440764", "words": "tench, ..."}, ...]
    DIR/dataset.json         {"size": 256, "mode": "paper", "quality": 90, "counts": {...}}
    DIR/stats.npz            mean image, channel mean/std, RGB eigen decomposition
    DIR/train/<wnid>/*.JPEG  DIR/val/<wnid>/*.JPEG
or, packed (``"packed"`` in dataset.json), DIR/train/ and DIR/val/ as ``packed`` describes them.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.data.sample_readers import FileReader
from alexnet_cli.errors import AlexnetError

IMAGE_SUFFIXES = {".jpeg", ".jpg"}


@dataclass(frozen=True)
class ClassInfo:
    index: int
    wnid: str
    words: str


@dataclass(frozen=True)
class SplitFiles:
    """One split's images in a fixed order (sorted by class index, then name) and their labels.

    Paths are strings: at ImageNet's size, 1.28 M ``Path`` objects cost seconds to make and sort.
    """

    files: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)

    def reader(self) -> FileReader:
        """A reader of its own for one pipeline (or one process)."""
        return FileReader.of(self.files)

    def name(self, index: int) -> str:
        return self.files[index]

    def describe(self, index: int) -> str:
        return self.files[index]

    def read(self, index: int) -> bytes:
        with open(self.files[index], "rb") as handle:
            return handle.read()


def read_classes(root: Path) -> list[ClassInfo]:
    path = root / "classes.json"
    if not path.is_file():
        raise AlexnetError(
            f"{path} not found: {root} is not a prepared dataset (run 'alexnet prepare-imagenet' first)"
        )
    try:
        entries = json.loads(path.read_text())
        classes = [ClassInfo(int(e["index"]), str(e["wnid"]), str(e.get("words", ""))) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise AlexnetError(f"{path} is malformed ({exc}); prepare the dataset again") from None
    if [c.index for c in classes] != list(range(len(classes))):
        raise AlexnetError(f"{path}: class indices must run 0..N-1 in order")
    if len(classes) < 2:
        raise AlexnetError(f"{path} lists {len(classes)} class; classification needs at least 2")
    return classes


def write_classes(root: Path, classes: list[ClassInfo]) -> None:
    payload = [{"index": c.index, "wnid": c.wnid, "words": c.words} for c in classes]
    write_text_atomic(root / "classes.json", json.dumps(payload, indent=1) + "\n")


def read_dataset_info(root: Path) -> dict:
    """``dataset.json`` if the dataset was prepared by this tool, else an empty dict."""
    path = root / "dataset.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def list_split(root: Path, split: str, classes: list[ClassInfo]) -> SplitFiles:
    """Every image of ``split``, labelled by the class order of ``classes.json``."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise AlexnetError(f"{split_dir} not found: a prepared dataset has train/ and val/ folders")
    known = {c.wnid for c in classes}
    with os.scandir(split_dir) as entries:
        strangers = sorted(e.name for e in entries if e.is_dir() and e.name not in known)
    if strangers:
        raise AlexnetError(f"{split_dir}/{strangers[0]} is not listed in classes.json; prepare the dataset again")
    files: list[str] = []
    labels: list[int] = []
    empty = []
    for info in classes:
        class_dir = os.path.join(split_dir, info.wnid)
        try:
            with os.scandir(class_dir) as entries:
                names = sorted(e.name for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        if not names:
            empty.append(info)
        files += [os.path.join(class_dir, name) for name in names]
        labels += [info.index] * len(names)
    if not files:
        raise AlexnetError(f"{split_dir} holds no JPEG images")
    if empty and split == "train":  # (a class without validation images is only left unscored)
        raise AlexnetError(f"{split_dir / empty[0].wnid}: class {empty[0].wnid} of classes.json has no training "
                           f"images ({len(empty)} such classes), so the network would have an output it never "
                           "learns: prepare the dataset again")
    return SplitFiles(files, labels)
