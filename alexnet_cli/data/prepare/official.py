"""Reading the ILSVRC2012 files as distributed, safely and without loading whole tars.

    ILSVRC2012_img_train.tar      1000 inner tars nXXXXXXXX.tar of JPEGs
    ILSVRC2012_img_val.tar        50,000 flat ILSVRC2012_val_XXXXXXXX.JPEG
    ILSVRC2012_devkit_t12.tar.gz  data/meta.mat, data/ILSVRC2012_validation_ground_truth.txt

Members are never extracted by their own names: the tool reads their bytes and
writes them under names it builds itself, and refuses any tar whose members are
not plain files with plain names (no '..', absolute paths, links or devices).
"""

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from alexnet_cli.errors import AlexnetError

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
META_MAT = "data/meta.mat"
VAL_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
# Known MD5s of the official files (as torchvision's ImageNet dataset lists them).
MD5 = {
    TRAIN_TAR: "1d675b47d978889d74fa0da5fadfb00e",
    VAL_TAR: "29b22e2961454d5413ddabcf34fc5622",
    DEVKIT_TAR: "fa75699e90414af021442c21a62c3abf",
}
WNID = re.compile(r"^n\d{8}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TarMember:
    """A regular file inside a tar: where its bytes start and how many there are."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Devkit:
    """The devkit's facts: WNID and words per ILSVRC2012_ID, and the val labels by file order."""

    id_to_wnid: dict[int, str]
    words: dict[str, str]
    val_ids: list[int]  # ILSVRC2012_ID of val image 1, 2, ...


def list_tar(path: Path) -> list[TarMember]:
    """The members of an uncompressed tar, checked to be plain files with plain names."""
    members = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                check_member(path, info)
                members.append(TarMember(info.name, info.offset_data, info.size))
    except tarfile.TarError as exc:
        raise AlexnetError(f"{path} is not a readable tar archive ({exc})") from None
    return members


def check_member(tar_path: Path | str, info: tarfile.TarInfo) -> None:
    if not info.isfile():
        kind = ("symlink" if info.issym() else "hard link" if info.islnk()
                else "directory" if info.isdir() else "special file")
        raise AlexnetError(f"{tar_path}: member {info.name!r} is a {kind}; an ILSVRC2012 tar holds only plain files")
    if not SAFE_NAME.match(info.name):
        raise AlexnetError(f"{tar_path}: member {info.name!r} has an unsafe or nested path; refusing this tar")


def read_devkit(path: Path) -> Devkit:
    """Parse ``meta.mat`` and the validation ground truth from the devkit tar.gz or folder."""
    if path.is_dir():
        meta_bytes = _read_file(path / META_MAT)
        truth_text = _read_file(path / VAL_GROUND_TRUTH).decode()
    else:
        try:
            with tarfile.open(path, mode="r:gz") as tar:
                found = {}
                for info in tar:
                    for wanted in (META_MAT, VAL_GROUND_TRUTH):
                        if info.isfile() and info.name.endswith(wanted):
                            found[wanted] = tar.extractfile(info).read()
        except (tarfile.TarError, OSError) as exc:
            raise AlexnetError(f"{path} is not a readable devkit tar.gz ({exc})") from None
        missing = [name for name in (META_MAT, VAL_GROUND_TRUTH) if name not in found]
        if missing:
            raise AlexnetError(f"{path} lacks {missing[0]}: expected the ILSVRC2012 devkit (t12)")
        meta_bytes, truth_text = found[META_MAT], found[VAL_GROUND_TRUTH].decode()
    id_to_wnid, words = parse_meta_mat(meta_bytes, str(path))
    try:
        val_ids = [int(line) for line in truth_text.split()]
    except ValueError:
        raise AlexnetError(f"{path}: {VAL_GROUND_TRUTH} must hold one ILSVRC2012_ID per line") from None
    unknown = sorted(set(val_ids) - set(id_to_wnid))
    if unknown:
        raise AlexnetError(f"{path}: ground truth names ILSVRC2012_ID {unknown[0]}, which meta.mat does not list")
    return Devkit(id_to_wnid, words, val_ids)


def parse_meta_mat(data: bytes, where: str) -> tuple[dict[int, str], dict[str, str]]:
    """The leaf synsets of ``meta.mat`` (num_children == 0): ILSVRC2012_ID → WNID, WNID → words."""
    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        id_to_wnid, words = {}, {}
        for entry in np.atleast_1d(synsets):
            if int(entry["num_children"]) != 0:
                continue
            wnid = str(entry["WNID"])
            id_to_wnid[int(entry["ILSVRC2012_ID"])] = wnid
            words[wnid] = str(entry["words"])
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise AlexnetError(f"{where}: {META_MAT} is not an ILSVRC2012 synset table ({exc})") from None
    return id_to_wnid, words


def write_meta_mat(entries: list[tuple[int, str, str]]) -> bytes:
    """A ``meta.mat`` of leaf synsets (ILSVRC2012_ID, WNID, words), as the demo's devkit needs."""
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
             ("num_children", "O"), ("children", "O"), ("wordnet_height", "O"), ("num_train_images", "O")]
    table = np.zeros((len(entries), 1), dtype=dtype)
    for row, (ilsvrc_id, wnid, words) in enumerate(entries):
        table[row, 0] = (ilsvrc_id, wnid, words, words, 0, np.zeros((0, 0)), 0, 0)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": table})
    # savemat's 116-byte header text holds the time of writing; a fixed one keeps the demo's devkit the same bytes
    # on every run, so that a rerun recognises its own source
    return b"MATLAB 5.0 MAT-file, written by alexnet-cli".ljust(116) + buffer.getvalue()[116:]


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise AlexnetError(f"{path} not found: expected the ILSVRC2012 devkit layout")
    return path.read_bytes()
