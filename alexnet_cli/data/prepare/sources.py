"""What a prepare run must do: find the source's classes and images, and cut the work into units.

Three kinds of source are accepted:
  official     the three ILSVRC2012 files (train tar of class tars, flat val tar, devkit)
  extracted    train/<wnid>/*.JPEG, a flat val/ of ILSVRC2012_val_*.JPEG, and the devkit (tar.gz or folder)
  imagefolder  train/<class>/*, val/<class>/* (labels from folder names)
A unit is one class of train (or val, for image folders) or a chunk of the flat
val set; a unit is done or not done, which is what makes a run resumable.
"""

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from alexnet_cli.data.dataset_files import IMAGE_SUFFIXES, ClassInfo
from alexnet_cli.data.prepare import official
from alexnet_cli.errors import AlexnetError

VAL_CHUNK = 500  # flat val images per unit: small enough for a smooth progress bar


class SourceRef(NamedTuple):
    """Where an image's bytes are: a whole file, or a slice of a tar."""

    kind: Literal["file", "tar"]
    path: str  # the file, or the tar holding the bytes
    offset: int  # 0 for a file
    size: int


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    split: Literal["train", "val"]
    owns_class_dir: bool  # True: the unit writes split/<wnid>/ as a whole; False: it adds files to several
    files: tuple[tuple[str, str, SourceRef], ...]  # (output name, wnid, where the bytes are)


@dataclass
class SourcePlan:
    kind: str
    classes: list[ClassInfo]
    units: list[WorkUnit] = field(default_factory=list)


class _TarSlice(io.RawIOBase):
    """A read-only window onto bytes [offset, offset + size) of a file, for nested tars."""

    def __init__(self, handle, offset: int, size: int) -> None:
        self._handle, self._offset, self._size, self._pos = handle, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = {0: pos, 1: self._pos + pos, 2: self._size + pos}[whence]
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._handle.seek(self._offset + self._pos)
        data = self._handle.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def detect_source(source: Path) -> str:
    if not source.is_dir():
        raise AlexnetError(f"--source {source} is not a folder; point it at the folder holding the ILSVRC2012 files")
    names = {p.name for p in source.iterdir()}
    if official.TRAIN_TAR in names or official.VAL_TAR in names:
        for required in (official.TRAIN_TAR, official.VAL_TAR, official.DEVKIT_TAR):
            if required not in names:
                raise AlexnetError(f"{source / required} not found: "
                                   "the official source needs all three ILSVRC2012 files")
        return "official"
    if (source / "train").is_dir() and (source / "val").is_dir():
        val_dirs = [p for p in (source / "val").iterdir() if p.is_dir()]
        if val_dirs:
            return "imagefolder"
        if _find_devkit(source) is None:
            raise AlexnetError(f"{source}/val is flat but no {official.DEVKIT_TAR} (or devkit folder) is beside it")
        return "extracted"
    raise AlexnetError(
        f"{source} holds neither {official.TRAIN_TAR}/{official.VAL_TAR}/{official.DEVKIT_TAR} "
        "nor train/ and val/ folders"
    )


def plan_source(source: Path, classes: int | None, per_class: int | None, seed: int) -> SourcePlan:
    kind = detect_source(source)
    planner = {"official": _plan_official, "extracted": _plan_extracted, "imagefolder": _plan_imagefolder}[kind]
    return planner(source, classes, per_class, seed)


def choose_classes(wnids: list[str], classes: int | None, seed: int) -> list[str]:
    """All classes, or a deterministic random subset of ``classes`` of them (ImageNet-100 style)."""
    wnids = sorted(wnids)
    if classes is None or classes >= len(wnids):
        return wnids
    if classes < 2:
        raise AlexnetError("--classes must be at least 2")
    chosen = np.random.default_rng(seed).choice(len(wnids), size=classes, replace=False)
    return sorted(wnids[i] for i in chosen)


def _plan_official(source: Path, classes: int | None, per_class: int | None, seed: int) -> SourcePlan:
    devkit = official.read_devkit(source / official.DEVKIT_TAR)
    train_tar = source / official.TRAIN_TAR
    inner = {}
    for member in official.list_tar(train_tar):
        wnid = member.name.removesuffix(".tar")
        if not member.name.endswith(".tar") or not official.WNID.match(wnid):
            raise AlexnetError(f"{train_tar}: member {member.name!r} is not a class tar nXXXXXXXX.tar")
        inner[wnid] = member
    unknown = sorted(set(inner) - set(devkit.words))
    if unknown:
        raise AlexnetError(f"{train_tar}: class {unknown[0]} is not in the devkit's meta.mat")
    chosen = _chosen_from_devkit(devkit, set(inner), classes, seed, f"{train_tar} holds class tars")
    infos = [ClassInfo(i, wnid, devkit.words.get(wnid, "")) for i, wnid in enumerate(chosen)]
    plan = SourcePlan("official", infos)
    with open(train_tar, "rb") as handle:
        for wnid in chosen:
            files = _list_inner_tar(train_tar, handle, inner[wnid])[:per_class]
            plan.units.append(WorkUnit(f"train-{wnid}", "train", True, tuple((n, wnid, ref) for n, ref in files)))
    val_tar = source / official.VAL_TAR
    plan.units += _flat_val_units(
        [(m.name, SourceRef("tar", str(val_tar), m.offset, m.size)) for m in official.list_tar(val_tar)], devkit,
        chosen, val_tar,
    )
    return plan


def _chosen_from_devkit(devkit: official.Devkit, found: set[str], classes: int | None, seed: int,
                        where: str) -> list[str]:
    """The devkit decides which classes there are: a source missing some is incomplete (a download cut
    short), unless --classes asked for a subset, which is drawn from the devkit and must all be there."""
    chosen = choose_classes(list(devkit.words), classes, seed)
    missing = [wnid for wnid in chosen if wnid not in found]
    if missing:
        of = f"{len(chosen)} chosen" if classes is not None and classes < len(devkit.words) else \
            f"the devkit's {len(chosen)}"
        raise AlexnetError(f"{where} for {len(chosen) - len(missing)} of {of} classes; missing {len(missing)}: "
                           f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (a download cut short? "
                           "compare it with --verify-md5)")
    return chosen


def _list_inner_tar(outer: Path, handle, member: official.TarMember) -> list[tuple[str, SourceRef]]:
    label = f"{outer}:{member.name}"
    files = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(_TarSlice(handle, member.offset, member.size)), mode="r:") as tar:
            for info in tar:
                official.check_member(label, info)
                if info.offset_data + info.size > member.size:
                    raise AlexnetError(f"{label} is cut short inside {info.name!r} (a download cut short? "
                                       "compare it with --verify-md5)")
                files.append((info.name, SourceRef("tar", str(outer), member.offset + info.offset_data, info.size)))
    except tarfile.TarError as exc:
        raise AlexnetError(f"{label} is not a readable tar archive ({exc})") from None
    return sorted(files)


def _flat_val_units(
    members: list[tuple[str, SourceRef]], devkit: official.Devkit, chosen: list[str], where: Path
) -> list[WorkUnit]:
    if len(members) < len(devkit.val_ids):
        numbers = {_val_number(name) for name, _ in members}
        first = next(n for n in range(1, len(devkit.val_ids) + 1) if n not in numbers)
        raise AlexnetError(f"{where} holds {len(members)} of the {len(devkit.val_ids)} validation images the devkit's "
                           f"ground truth lists (ILSVRC2012_val_{first:08d}.JPEG is missing; a download cut short? "
                           "compare it with --verify-md5)")
    wanted = set(chosen)
    labelled = []
    for name, ref in sorted(members):
        number = _val_number(name)
        if number is None or number > len(devkit.val_ids):
            raise AlexnetError(f"val image {name!r} has no line in the devkit's ground truth")
        wnid = devkit.id_to_wnid[devkit.val_ids[number - 1]]
        if wnid in wanted:
            labelled.append((name, wnid, ref))
    return [
        WorkUnit(f"val-{start // VAL_CHUNK:04d}", "val", False, tuple(labelled[start : start + VAL_CHUNK]))
        for start in range(0, len(labelled), VAL_CHUNK)
    ]


def _val_number(name: str) -> int | None:
    stem = Path(name).stem
    if not stem.startswith("ILSVRC2012_val_"):
        return None
    digits = stem.removeprefix("ILSVRC2012_val_")
    return int(digits) if digits.isdigit() else None


def _find_devkit(source: Path) -> Path | None:
    for candidate in (source / official.DEVKIT_TAR, source / "ILSVRC2012_devkit_t12", source / "devkit"):
        if candidate.exists():
            return candidate
    return None


def _image_files(folder: Path) -> list[tuple[str, SourceRef]]:
    return [
        (p.name, SourceRef("file", str(p), 0, p.stat().st_size))
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() in {".png", ".bmp"})
    ]


def _plan_extracted(source: Path, classes: int | None, per_class: int | None, seed: int) -> SourcePlan:
    devkit = official.read_devkit(_find_devkit(source))
    class_dirs = sorted(p for p in (source / "train").iterdir() if p.is_dir())
    unknown = sorted({p.name for p in class_dirs} - set(devkit.words))
    if unknown:
        raise AlexnetError(f"{source / 'train' / unknown[0]}: class {unknown[0]} is not in the devkit's meta.mat")
    chosen = _chosen_from_devkit(devkit, {p.name for p in class_dirs}, classes, seed,
                                 f"{source / 'train'} holds folders")
    infos = [ClassInfo(i, wnid, devkit.words.get(wnid, "")) for i, wnid in enumerate(chosen)]
    plan = SourcePlan("extracted", infos)
    for wnid in chosen:
        files = _image_files(source / "train" / wnid)[:per_class]
        plan.units.append(WorkUnit(f"train-{wnid}", "train", True, tuple((n, wnid, ref) for n, ref in files)))
    plan.units += _flat_val_units(_image_files(source / "val"), devkit, chosen, source / "val")
    return plan


def _plan_imagefolder(source: Path, classes: int | None, per_class: int | None, seed: int) -> SourcePlan:
    names = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    val_only = sorted(p.name for p in (source / "val").iterdir() if p.is_dir() and p.name not in names)
    if val_only:  # a class the network never learns: dropped, its images would vanish from the score unseen
        listed = ", ".join(val_only[:5]) + (" ..." if len(val_only) > 5 else "")
        raise AlexnetError(f"{source / 'val' / val_only[0]} has no training folder {source / 'train' / val_only[0]} "
                           f"({len(val_only)} such val class(es): {listed}): the network could never predict it; "
                           "add its training images or move it out of val/")
    chosen = choose_classes(names, classes, seed)
    infos = [ClassInfo(i, name, name) for i, name in enumerate(chosen)]
    plan = SourcePlan("imagefolder", infos)
    for split in ("train", "val"):
        for name in chosen:
            folder = source / split / name
            files = _image_files(folder) if folder.is_dir() else []
            if split == "train":
                files = files[:per_class]
            if files:
                plan.units.append(WorkUnit(f"{split}-{name}", split, True, tuple((n, name, ref) for n, ref in files)))
    return plan
