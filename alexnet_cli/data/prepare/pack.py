"""``alexnet pack``: a prepared dataset → the same JPEG bytes in tar shards (see ``data.packed``), resumably.

Each shard is written under a temporary name, fsynced and renamed, then its DALI index, and only then its
marker ``OUT/.work/pack/<split>-<n>.npy`` (its index rows): a pack killed at any moment reruns from the first
shard without a marker, and writes the same bytes (tar headers carry no time, owner or mode of the machine,
and shards cut at the same samples). The split indexes, classes, statistics and report follow;
``dataset.json`` is written last: it marks OUT done, and nothing reads a dataset without it as packed.
"""

import json
import os
import shutil
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_cli.atomic import out_of_space, write_atomic, write_text_atomic
from alexnet_cli.data.dataset_files import ClassInfo, SplitFiles, list_split, read_classes, read_dataset_info
from alexnet_cli.data.fingerprint import Fingerprint
from alexnet_cli.data.packed import INDEX_FILE, KEYS_FILE, PACK_FORMAT, dali_index_name, shard_name
from alexnet_cli.data.prepare.run import check_started_with, remove_tree
from alexnet_cli.data.sample_readers import INDEX_DTYPE
from alexnet_cli.errors import AlexnetError
from alexnet_cli.locks import ExclusiveLock
from alexnet_cli.progress import Progress, SilentProgress

DEFAULT_SHARD_BYTES = 1 << 30  # ~1 GB: few opens per epoch, and a shard still streams in seconds
MIN_SHARD_BYTES = 1 << 16
BLOCK = 512  # a tar block: every header is one, every member's data is padded to a whole number of them
SPLITS = ("train", "val")
COPIED = ("classes.json", "stats.npz", "report.json")  # what a packed dataset keeps of the unpacked one, as is


@dataclass(frozen=True)
class PackOptions:
    data: Path
    out: Path
    shard_bytes: int = DEFAULT_SHARD_BYTES
    own_entries: tuple[str, ...] = ()  # entries of ``out`` that are not foreign (prepare --pack's staging)


@dataclass
class PackSummary:
    out: Path
    counts: dict[str, int]
    shards: dict[str, int]
    bytes: int
    fingerprint: str
    seconds: float = 0.0
    already_done: bool = False
    samples_per_second: float = 0.0
    written: dict[str, int] = field(default_factory=dict)  # samples packed by this run (a resume skips the rest)


def pack_dataset(options: PackOptions, progress: Progress | None = None) -> PackSummary:
    """Pack ``options.data`` into ``options.out``; see the module docstring for the guarantees."""
    progress = progress or SilentProgress()
    _check_options(options)
    classes = read_classes(options.data)
    info = read_dataset_info(options.data)
    work = options.out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ExclusiveLock(work / "lock", f"another alexnet pack is writing {options.out}"):
        config = {"format": PACK_FORMAT, "source": str(options.data.resolve()), "shard_bytes": options.shard_bytes}
        if _finished(options.out, config, info):
            return _summary(options.out, already_done=True)
        check_started_with(work / "pack.json", config, options.out)
        splits = {split: list_split(options.data, split, classes) for split in _splits(info)}
        written = {}
        try:
            for split, files in splits.items():
                written[split] = _pack_split(files, classes, options, split, progress)
        except OSError as exc:
            if not out_of_space(exc):
                raise
            raise AlexnetError(f"could not write under {options.out}: the disk is full; free space there and run "
                               "the same command again (it continues where it stopped)") from None
        _finish(options, splits, classes, info, config)
    summary = _summary(options.out)
    summary.seconds = time.perf_counter() - started
    summary.written = written
    summary.samples_per_second = sum(written.values()) / summary.seconds if summary.seconds else 0.0
    return summary


def _splits(info: dict) -> list[str]:
    """The splits the dataset holds: a val set all of whose images were unreadable has none."""
    return [split for split in SPLITS if info.get("counts", {}).get(split, 1)]


def _check_options(options: PackOptions) -> None:
    if options.shard_bytes < MIN_SHARD_BYTES:
        raise AlexnetError(f"--shard-size {options.shard_bytes} bytes is too small: give at least "
                           f"{MIN_SHARD_BYTES} (the default, {DEFAULT_SHARD_BYTES >> 20} MB, suits a cluster's disks)")
    if read_dataset_info(options.data).get("packed"):
        raise AlexnetError(f"{options.data} is packed already: give the prepared dataset it was packed from")
    if options.out.resolve() == options.data.resolve() or options.data.resolve() in options.out.resolve().parents:
        raise AlexnetError(f"--out {options.out} is inside the dataset it packs: choose a folder outside "
                           f"{options.data}")
    check_pack_out(options.out, options.own_entries)


def check_pack_out(out: Path, own_entries: tuple[str, ...] = ()) -> None:
    """Pack writes only into a new or empty folder, or one where it started (or finished) already."""
    if out.exists() and not out.is_dir():
        raise AlexnetError(f"--out {out} is a file: name a folder for the packed dataset")
    if out.is_dir() and not (out / ".work" / "pack.json").is_file() and not _finished_layout(out):
        foreign = sorted(p.name for p in out.iterdir() if p.name not in {".work", *own_entries})
        if foreign:
            raise AlexnetError(f"--out {out} already holds {foreign[0]!r}, which alexnet pack did not write: choose "
                               "a new or empty folder")


def _finished_layout(out: Path) -> bool:
    return bool(read_dataset_info(out).get("packed"))


def _finished(out: Path, config: dict, source_info: dict) -> bool:
    """OUT is this pack, done (a rerun is a no-op); a finished pack of other samples or shards is refused: packing
    over it would rewrite shards that its index, still complete, describes."""
    done = read_dataset_info(out)
    if not done.get("packed"):
        return False
    same_samples = (done.get("fingerprint") == source_info["fingerprint"] if source_info.get("fingerprint")
                    else done["packed"].get("source") == config["source"])
    if same_samples and done["packed"].get("shard_bytes") == config["shard_bytes"]:
        return True
    raise AlexnetError(f"--out {out} holds a finished packed dataset of {done['packed'].get('source')} in shards of "
                       f"{done['packed'].get('shard_bytes')} bytes: choose a new --out (or remove it to pack again)")


def sample_keys(files: SplitFiles, classes: list[ClassInfo]) -> list[str]:
    """``<wnid>/<stem>`` per sample, dots made underscores (a webdataset key ends at its first dot); a key
    that would repeat another gets its sample's number."""
    keys, seen = [], set()
    for number, (path, label) in enumerate(zip(files.files, files.labels)):
        key = f"{classes[label].wnid}/{os.path.splitext(os.path.basename(path))[0].replace('.', '_')}"
        if key in seen:
            key = f"{key}_{number}"
        seen.add(key)
        keys.append(key)
    return keys


def _pack_split(files: SplitFiles, classes: list[ClassInfo], options: PackOptions, split: str,
                progress: Progress) -> int:
    """Write the split's shards from the first one without a marker; returns the samples written."""
    folder, markers = options.out / split, options.out / ".work" / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    markers.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*.tmp"):  # a killed run's half-written shard: it is written again
        leftover.unlink()
    keys = sample_keys(files, classes)
    rows = np.zeros(len(files), INDEX_DTYPE)
    start, shard = 0, 0
    while (marker := markers / f"{split}-{shard:06d}.npy").is_file():
        part = np.load(marker)
        rows[start:start + len(part)] = part
        start, shard = start + len(part), shard + 1
    resumed_at = start
    with progress.task(f"pack {split}", len(files)) as task:
        task.advance(start)
        while start < len(files):
            part = _write_shard(files, keys, start, shard, folder, options.shard_bytes, task)
            _save(markers / f"{split}-{shard:06d}.npy", part)
            rows[start:start + len(part)] = part
            start, shard = start + len(part), shard + 1
    _save(folder / INDEX_FILE, rows)
    _save(folder / KEYS_FILE, np.array([key.encode() for key in keys], dtype=bytes))
    return len(files) - resumed_at


def _write_shard(files: SplitFiles, keys: list[str], start: int, shard: int, folder: Path, limit: int,
                 task) -> np.ndarray:
    """Shard ``shard`` from sample ``start``: samples in order while the tar stays within ``limit`` bytes (at
    least one); its rows of the index."""
    rows = []
    position = 0

    def write(tmp: Path) -> None:
        nonlocal position
        with open(tmp, "wb") as tar:
            for number in range(start, len(files)):
                data = files.read(number)
                label = str(files.labels[number]).encode()
                member = _member(keys[number], ".jpg", data) + _member(keys[number], ".cls", label)
                if rows and position + len(member) + 2 * BLOCK > limit:
                    break
                tar.write(member)
                rows.append((shard, position + BLOCK, len(data), files.labels[number], zlib.crc32(data)))
                position += len(member)
                task.advance()
            tar.write(bytes(2 * BLOCK))  # the end-of-archive marker

    write_atomic(folder / shard_name(shard), write)
    part = np.array(rows, INDEX_DTYPE)
    write_text_atomic(folder / dali_index_name(shard), dali_index(part, keys[start:start + len(part)]))
    return part


def _member(key: str, extension: str, data: bytes) -> bytes:
    """One tar member, header and padded data, the same bytes on every machine."""
    info = tarfile.TarInfo(key + extension)
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), 0o644, 0, 0, 0, "", ""
    try:
        header = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    except ValueError:
        raise AlexnetError(f"{key}{extension}: the name is too long for a tar header (255 bytes): shorten the "
                           "file's name in the prepared dataset") from None
    return header + data + bytes(-len(data) % BLOCK)


def dali_index(rows: np.ndarray, keys: list[str]) -> str:
    """The shard's index as DALI's ``wds2idx`` writes it (v1.2): per sample, each member's extension, data
    offset, size and name."""
    lines = [f"v1.2 {len(rows)}"]
    for row, key in zip(rows, keys):
        offset, size = int(row["offset"]), int(row["size"])
        label_offset = offset + size + (-size % BLOCK) + BLOCK
        lines.append(f"jpg {offset} {size} {key}.jpg cls {label_offset} {len(str(row['label']))} {key}.cls")
    return "\n".join(lines) + "\n"


def _save(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)

    write_atomic(path, write)


def _finish(options: PackOptions, splits: dict[str, SplitFiles], classes: list[ClassInfo], info: dict,
            config: dict) -> None:
    fingerprint = Fingerprint()
    counts = {}
    for split, files in splits.items():
        rows = np.load(options.out / split / INDEX_FILE)
        fingerprint.add_split(split, files, classes, rows["size"].tolist(), rows["crc32"].tolist())
        counts[split] = len(rows)
    for name in COPIED:
        if (options.data / name).is_file():
            write_atomic(options.out / name, lambda tmp, source=options.data / name: shutil.copyfile(source, tmp))
    dataset = {**info, "counts": counts, "packed": config, "fingerprint": fingerprint.hexdigest()}
    for folder in [options.out / split for split in counts] + [options.out]:
        _sync_folder(folder)  # every shard's and index's rename on disk before dataset.json says they are there
    write_text_atomic(options.out / "dataset.json", json.dumps(dataset, indent=1) + "\n")
    _sync_folder(options.out)
    shutil.rmtree(options.out / ".work" / "pack", ignore_errors=True)
    (options.out / ".work" / "pack.json").unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _summary(out: Path, *, already_done: bool = False) -> PackSummary:
    info = read_dataset_info(out)
    shards = {split: len(list((out / split).glob("*.tar"))) for split in info["counts"]}
    size = sum(path.stat().st_size for split in info["counts"] for path in (out / split).glob("*.tar"))
    return PackSummary(out, info["counts"], shards, size, info["fingerprint"], already_done=already_done)


STAGING = ".unpacked"  # prepare-imagenet --pack prepares here, inside OUT, then packs into OUT
TRASH = ".unpacked.removing"


def prepare_packed(out: Path, prepare: Callable[[Path], object], shard_bytes: int = DEFAULT_SHARD_BYTES,
                   progress: Progress | None = None, *, stored_as: dict | None = None) -> PackSummary:
    """``prepare-imagenet --pack``: ``prepare(OUT/.unpacked)`` (resumable), pack that into OUT, then remove it.
    A rerun after a crash continues the step it was in; after the end it finds OUT complete, if it was prepared
    as asked (``stored_as``: dataset.json's size and mode) in shards of ``shard_bytes``."""
    out = Path(out)
    remove_tree(out / TRASH)  # a removal of the staging that a crash cut short
    if _finished_layout(out) and not (out / STAGING).exists():
        done = read_dataset_info(out)
        asked = {**(stored_as or {}), "shard_bytes": shard_bytes}
        found = {**{key: done.get(key) for key in stored_as or {}}, "shard_bytes": done["packed"].get("shard_bytes")}
        if found != asked:
            key = next(key for key in asked if asked[key] != found[key])
            raise AlexnetError(f"--out {out} holds a finished packed dataset with {key}={found[key]!r}, not "
                               f"{asked[key]!r}: choose a new --out")
        return _summary(out, already_done=True)
    check_pack_out(out, (STAGING, TRASH))
    staging, created = out / STAGING, not out.exists()
    try:
        prepare(staging)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a first attempt that failed at once leaves no empty folder behind
    summary = pack_dataset(PackOptions(staging, out, shard_bytes, own_entries=(STAGING, TRASH)), progress)
    os.replace(staging, out / TRASH)  # at once: a rerun never finds a staging half removed
    remove_tree(out / TRASH)
    return summary
