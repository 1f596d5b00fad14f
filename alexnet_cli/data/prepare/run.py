"""``alexnet prepare-imagenet``: source files → the prepared layout (see ``dataset_files``), resumably.

Every unit of work (a class, or a chunk of the flat val set) writes into
``OUT/.work/tmp/<unit>/`` and is moved into place by renames; only then is its
marker ``OUT/.work/done/<unit>.json`` written. A run killed at any moment
(SIGKILL included) leaves finished units and temporary junk; a rerun skips the
former and clears the latter. ``dataset.json`` is written last: it marks OUT done.
"""

import ctypes
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alexnet_cli.atomic import out_of_space, write_atomic, write_text_atomic
from alexnet_cli.data.dataset_files import list_split, write_classes
from alexnet_cli.data.fingerprint import Fingerprint, fingerprint_of_files
from alexnet_cli.data.prepare import official
from alexnet_cli.data.prepare.convert import BYTES_PER_IMAGE_AT_256, JPEG_QUALITY, BadImage, ResizeMode, convert_image
from alexnet_cli.data.prepare.sources import SourcePlan, WorkUnit, plan_source
from alexnet_cli.data.stats import StatsAccumulator
from alexnet_cli.errors import AlexnetError
from alexnet_cli.locks import ExclusiveLock
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.terminal import byte_size

FORMAT_VERSION = 1
FULL_COUNTS = {"train": 1_281_167, "val": 50_000}  # ILSVRC2012 as distributed


@dataclass(frozen=True)
class PrepareOptions:
    source: Path
    out: Path
    workers: int | None = None  # None: all cores
    size: int = 256  # shorter side of the stored images (§2)
    mode: ResizeMode = "paper"
    classes: int | None = None
    per_class: int | None = None
    verify_md5: bool = False
    strict: bool = False
    quality: int = JPEG_QUALITY
    seed: int = 0  # picks the --classes subset


@dataclass
class PrepareSummary:
    out: Path
    counts: dict[str, int]
    classes: int
    skipped: list[dict] = field(default_factory=list)
    fixes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    workers: int = 1
    already_done: bool = False
    source_kind: str = "official"  # official, extracted (both checked against the devkit) or imagefolder


def prepare_imagenet(options: PrepareOptions, progress: Progress | None = None) -> PrepareSummary:
    """Prepare a dataset; see the module docstring for the guarantees."""
    try:
        return _prepare(options, progress)
    except OSError as exc:  # the machine's limits, met in a worker's write that names no file
        said = _machine_error(exc, options)
        if said is None:
            raise
        raise said from None


def _machine_error(exc: OSError, options: PrepareOptions) -> AlexnetError | None:
    """The line for a limit of the machine (room, open files), which a rerun after raising it gets past."""
    if out_of_space(exc):
        return AlexnetError(f"could not write under {options.out}: the disk is full or a file size limit was "
                            "reached; free space there and run the same command again (it continues where it "
                            "stopped)")
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return AlexnetError(f"too many open files (the limit, ulimit -n, is {soft}): raise it or use fewer --workers, "
                            "and run the same command again")
    return None


def _prepare(options: PrepareOptions, progress: Progress | None) -> PrepareSummary:
    progress = progress or SilentProgress()
    _check_options(options)
    check_out_is_ours(options)
    started = time.perf_counter()
    work = options.out / ".work"
    created = not options.out.exists()
    work.mkdir(parents=True, exist_ok=True)
    try:
        with ExclusiveLock(work / "lock", f"another prepare-imagenet is writing {options.out}"):
            try:
                config = _config(options)
                if (options.out / "dataset.json").is_file() and _stored_config(work) == config:
                    summary = _summary_from_report(options.out)
                    summary.already_done = True
                    return summary
                _check_config(work, config)
                if options.verify_md5:
                    _verify_md5(options.source, progress)
                plan = plan_source(options.source, options.classes, options.per_class, options.seed)
                done_dir = work / "done"
                done_dir.mkdir(exist_ok=True)
                todo = [u for u in plan.units if not (done_dir / f"{u.unit_id}.json").is_file()]
                _check_disk(options, todo)
                workers = options.workers or os.cpu_count() or 1
                _ensure_open_files(workers)
                _run_units(todo, options, workers, progress)
                summary = _finish(options, plan, work, progress)
            except BaseException:
                _forget_if_nothing_done(work)
                raise
    finally:
        if created and options.out.is_dir() and not any(options.out.iterdir()):
            options.out.rmdir()  # a failed first attempt leaves no empty folder behind
    summary.seconds = time.perf_counter() - started
    processed = sum(len(u.files) for u in todo)
    summary.images_per_second = processed / summary.seconds if summary.seconds else 0.0
    summary.workers = workers
    return summary


def _check_options(options: PrepareOptions) -> None:
    if options.size < 32:
        raise AlexnetError(f"--size {options.size} is too small; the paper stores 256")
    if options.mode not in ("paper", "shorter"):
        raise AlexnetError(f"--mode {options.mode!r}: use paper or shorter")
    if options.per_class is not None and options.per_class < 1:
        raise AlexnetError("--per-class must be at least 1")
    if not 1 <= options.quality <= 100:
        raise AlexnetError("--quality must be between 1 and 100")
    if options.out.resolve() == options.source.resolve():
        raise AlexnetError("--out must differ from --source")


def _forget_if_nothing_done(work: Path) -> None:
    """A prepare that failed before finishing any unit (a wrong --source, a truncated tar) leaves no
    record: a corrected rerun, with other options, starts afresh. Finished units stay to be resumed."""
    if not any((work / "done").glob("*.json")):
        remove_tree(work)


def check_out_is_ours(options: PrepareOptions) -> None:
    """Prepare replaces class folders it writes: it starts only in an empty OUT (or one holding the
    source, as --demo writes it), and resumes only an OUT where it started."""
    out = options.out
    if out.exists() and not out.is_dir():
        raise AlexnetError(f"--out {out} is a file: name a folder for the dataset")
    if not out.is_dir() or (out / ".work" / "config.json").is_file():
        return
    own = {".work"}
    try:
        own.add(options.source.resolve().relative_to(out.resolve()).parts[0])
    except (ValueError, IndexError):
        pass
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise AlexnetError(f"--out {out} already holds {foreign[0]!r}{more}, which prepare-imagenet did not write: "
                           "choose a new or empty folder")


def _config(options: PrepareOptions) -> dict:
    return {
        "format": FORMAT_VERSION, "source": str(options.source.resolve()), "size": options.size,
        "mode": options.mode, "quality": options.quality, "classes": options.classes,
        "per_class": options.per_class, "seed": options.seed,
    }


def _stored_config(work: Path) -> dict | None:
    return _stored(work / "config.json")


def _stored(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _check_config(work: Path, config: dict) -> None:
    check_started_with(work / "config.json", config, work.parent)


def check_started_with(path: Path, config: dict, out: Path) -> None:
    """Record ``config`` at ``path`` for a first attempt at ``out``; refuse a resume asking for anything else
    (prepare's and pack's: a rerun continues only what the same options started)."""
    stored = _stored(path)
    if stored is None:
        write_text_atomic(path, json.dumps(config, indent=1))
        return
    changed = [key for key in config if stored.get(key) != config[key]]
    if changed:
        key = changed[0]
        raise AlexnetError(
            f"{out} was started with {key}={stored.get(key)!r}, not {config[key]!r}: "
            "rerun with the same options to resume, or choose a new --out"
        )


def _verify_md5(source: Path, progress: Progress) -> None:
    for name, expected in official.MD5.items():
        path = source / name
        if not path.is_file():
            continue
        digest = hashlib.md5()
        with progress.task(f"md5 {name}", path.stat().st_size) as task, open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
                task.advance(len(chunk))
        if digest.hexdigest() != expected:
            raise AlexnetError(f"{path}: MD5 {digest.hexdigest()} is not the official {expected}; download it again")


def _check_disk(options: PrepareOptions, todo: list[WorkUnit]) -> None:
    per_image = BYTES_PER_IMAGE_AT_256 * (options.size / 256) ** 2 * (1.0 if options.mode == "paper" else 1.4)
    needed = sum(min(ref.size, per_image) for unit in todo for _, _, ref in unit.files) * 1.1
    free = shutil.disk_usage(options.out).free
    if needed > free:
        raise AlexnetError(
            f"{options.out} has {byte_size(free)} free but the prepared images need about "
            f"{byte_size(needed)}; free space or choose another --out"
        )


# Descriptors the parent holds (interpreter, lock, tars) plus a worker's pipes and open tars, with room to spare.
_BASE_FILES, _FILES_PER_WORKER = 16, 6


def _ensure_open_files(workers: int) -> None:
    """Under a small open-files limit the worker pool fails with EMFILE, or hangs when its own management
    thread meets it: raise the soft limit where the hard one allows, else refuse before starting."""
    needed = _BASE_FILES + _FILES_PER_WORKER * workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        fitting = (hard - _BASE_FILES) // _FILES_PER_WORKER
        raise AlexnetError(f"the open-files limit (ulimit -n) is {hard}, too few for {workers} worker(s): raise it "
                           f"to {needed}" + (f" or use --workers {fitting}" if fitting >= 1 else ""))
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # the soft limit is this process's to raise


def _run_units(todo: list[WorkUnit], options: PrepareOptions, workers: int, progress: Progress) -> None:
    for split in ("train", "val"):
        units = [u for u in todo if u.split == split]
        if not units:
            continue
        with progress.task(f"prepare {split}", sum(len(u.files) for u in units)) as task:
            if workers == 1:
                results = (process_unit(u, options) for u in units)
                for result in results:
                    _after_unit(result, options, task)
            else:
                with ProcessPoolExecutor(workers, initializer=_die_with_parent) as pool:
                    for result in pool.map(process_unit, units, [options] * len(units)):
                        _after_unit(result, options, task)


def _after_unit(result: dict, options: PrepareOptions, task) -> None:
    task.advance(result["written"] + len(result["skipped"]))
    if options.strict and result["skipped"]:
        first = result["skipped"][0]
        raise AlexnetError(f"--strict: {first['file']} is {first['reason']}")


def _die_with_parent() -> None:
    """Workers get SIGKILL when the parent dies, so a killed run leaves no writer behind."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def process_unit(unit: WorkUnit, options: PrepareOptions) -> dict:
    """Convert one unit's images, move them into place and mark the unit done."""
    work = options.out / ".work"
    tmp = work / "tmp" / unit.unit_id
    remove_tree(tmp)  # leftovers of a killed run: any left would be moved into place with this unit's images
    stats = StatsAccumulator((options.size, options.size) if options.mode == "paper" else None)
    skipped, fixes, written = [], Counter(), 0
    records: dict[str, dict[str, list[int]]] = {}  # wnid → written name → [size, crc32], for the fingerprint
    handles: dict[str, object] = {}
    try:
        for name, wnid, ref in unit.files:
            data = _read_ref(ref, handles)
            source_label = f"{ref.path}:{name}" if ref.kind == "tar" else ref.path
            try:
                converted = convert_image(data, options.size, options.mode, options.quality)
            except BadImage as exc:
                skipped.append({"split": unit.split, "file": source_label, "reason": str(exc)})
                continue
            target = tmp / wnid / (Path(name).stem + ".JPEG")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(converted.jpeg)
            records.setdefault(wnid, {})[target.name] = [len(converted.jpeg), zlib.crc32(converted.jpeg)]
            fixes.update(converted.fixes)
            if unit.split == "train":
                stats.add(converted.rgb)
            written += 1
    finally:
        for handle in handles.values():
            handle.close()
    _move_into_place(unit, tmp, options.out / unit.split)
    if unit.split == "train":
        _save_partial_stats(work / "stats" / f"{unit.unit_id}.npz", stats)
    result = {"unit": unit.unit_id, "split": unit.split, "written": written, "skipped": skipped, "fixes": dict(fixes),
              "records": records}
    write_text_atomic(work / "done" / f"{unit.unit_id}.json", json.dumps(result))
    remove_tree(tmp)
    return result


def remove_tree(path: Path) -> None:
    """Remove a folder prepare wrote, or refuse in one line: what a removal leaves (files it cannot delete, a link
    planted in its place) must not be mixed into the dataset or written through, nor fill the disk unseen."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass  # nothing to remove
    except OSError as exc:
        raise AlexnetError(f"cannot remove {exc.filename or path}: {exc.strerror or exc}; remove it by hand and "
                           "rerun") from None


def _read_ref(ref, handles: dict) -> bytes:
    kind, path, offset, size = ref
    if kind == "file":
        return Path(path).read_bytes()
    if path not in handles:
        handles[path] = open(path, "rb")
    handle = handles[path]
    handle.seek(offset)
    return handle.read(size)


def _move_into_place(unit: WorkUnit, tmp: Path, split_dir: Path) -> None:
    split_dir.mkdir(parents=True, exist_ok=True)
    if unit.owns_class_dir:
        wnid = unit.files[0][1]
        final = split_dir / wnid
        remove_tree(final)  # a half-finished earlier attempt
        (tmp / wnid).mkdir(parents=True, exist_ok=True)
        os.replace(tmp / wnid, final)
        return
    for class_dir in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        (split_dir / class_dir.name).mkdir(exist_ok=True)
        for image in sorted(class_dir.iterdir()):
            os.replace(image, split_dir / class_dir.name / image.name)


def _save_partial_stats(path: Path, stats: StatsAccumulator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **stats.to_arrays())

    write_atomic(path, write)


def _finish(options: PrepareOptions, plan: SourcePlan, work: Path, progress: Progress) -> PrepareSummary:
    out = options.out
    results = [json.loads((work / "done" / f"{u.unit_id}.json").read_text()) for u in plan.units]
    counts = {split: sum(r["written"] for r in results if r["split"] == split) for split in ("train", "val")}
    on_disk = {split: sum(1 for _ in (out / split).glob("*/*.JPEG")) if (out / split).is_dir() else 0
               for split in ("train", "val")}
    if on_disk != counts:
        raise AlexnetError(f"{out}: found {on_disk} images on disk but the run wrote {counts}; delete {out} and rerun")
    if counts["train"] == 0:
        raise AlexnetError(f"no training image of {options.source} could be read")
    skipped = [s for r in results for s in r["skipped"]]
    fixes = Counter()
    for r in results:
        fixes.update(r["fixes"])
    write_classes(out, plan.classes)
    total = StatsAccumulator(None)
    for unit in plan.units:
        if unit.split == "train":
            with np.load(work / "stats" / f"{unit.unit_id}.npz") as data:
                part = StatsAccumulator.from_arrays(data)
            if total.image_sum is None and part.image_sum is not None:
                total.image_sum = np.zeros_like(part.image_sum)
            total.merge(part)
    total.finish().save(out / "stats.npz")
    per_class = {c.wnid: 0 for c in plan.classes}
    for image in (out / "train").glob("*/*.JPEG"):
        per_class[image.parent.name] += 1
    empty = [wnid for wnid, count in per_class.items() if count == 0]
    if empty:
        raise AlexnetError(f"class {empty[0]} has no readable training image ({len(empty)} such classes); "
                           f"see the skipped files in {out}/.work/done/")
    report = {
        "source": str(options.source), "source_kind": plan.kind, "size": options.size, "mode": options.mode,
        "quality": options.quality, "classes": len(plan.classes), "counts": counts,
        "expected_full_counts": FULL_COUNTS, "train_per_class": per_class,
        "skipped": skipped, "fixes": dict(sorted(fixes.items())),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    info = {"format": FORMAT_VERSION, "size": options.size, "mode": options.mode,
            "quality": options.quality, "counts": counts,
            "fingerprint": _fingerprint(results, plan.classes, out, [s for s in ("train", "val") if counts[s]],
                                        progress)}
    write_text_atomic(out / "dataset.json", json.dumps(info, indent=1) + "\n")
    # The per-unit statistics (1.5 MB per class, 1.5 GB for ImageNet) are merged into stats.npz now.
    for leftover in ("tmp", "stats"):
        remove_tree(work / leftover)
    return _summary_from_report(out)


def _fingerprint(results: list[dict], classes: list, out: Path, splits: list[str], progress: Progress) -> str:
    """``data.fingerprint`` of what the units wrote, from the sizes and crc32s they recorded; where a unit was
    finished by a version that recorded none, from the files, read again."""
    if any("records" not in result for result in results):
        return fingerprint_of_files({split: list_split(out, split, classes) for split in splits}, classes, progress)
    written: dict[str, dict[str, dict[str, list[int]]]] = {split: {} for split in splits}
    for result in results:
        for wnid, names in result["records"].items():
            written[result["split"]].setdefault(wnid, {}).update(names)
    fingerprint = Fingerprint()
    for split in splits:  # the order list_split gives: class index, then file name
        fingerprint.add_samples(split, ((c.wnid, name, *written[split][c.wnid][name]) for c in classes
                                        for name in sorted(written[split].get(c.wnid, {}))))
    return fingerprint.hexdigest()


def _summary_from_report(out: Path) -> PrepareSummary:
    report = json.loads((out / "report.json").read_text())
    return PrepareSummary(out, report["counts"], report["classes"], report["skipped"], report["fixes"],
                          source_kind=report.get("source_kind", "official"))


def summary_dict(summary) -> dict:
    """A summary as JSON writes it (prepare's or pack's: both say where they wrote, ``out``)."""
    data = asdict(summary)
    data["out"] = str(summary.out)
    return data
