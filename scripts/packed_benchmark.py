"""Packed shards against one file per image, side by side in one run: opens, start-up, img/s.

    python scripts/packed_benchmark.py PHOTOS WORK [--repeats 3] [--batches 30]

PHOTOS is a dataset prepared by 'alexnet prepare-imagenet' (e.g. the 1000 sample photos at 256×256).
WORK/photos-packed gets PHOTOS packed ('alexnet pack'); WORK/imagenet the ImageNet-size layout of
scripts/imagenet_scale.py (1,281,167 links to PHOTOS' images) and WORK/imagenet-packed an index of as many
samples over sparse 1 GiB shards (the start-up reads only the index and the shards' sizes). Printed:

  opens     files (or shards) one epoch of the DALI training loader opens, per reader setting
  start-up  what a rank does before its first batch that grows with the dataset: the split's listing (or
            index load and shard check) and the loader's reader (the compact path array, or a copy)
  img/s     the DALI training loader on PHOTOS and on its packed twin, alternating, medians

Page-cache reads on a local disk: the img/s and start-up here say nothing about Lustre or NFS, where the
opens and listings this replaces are what costs. Nothing here is a test: it prints figures.
"""

import argparse
import json
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.dataset_files import list_split, read_classes
from alexnet_cli.data.packed import INDEX_FILE, KEYS_FILE, dali_index_name, read_packed_split, shard_name
from alexnet_cli.data.prepare.pack import DEFAULT_SHARD_BYTES, PackOptions, pack_dataset
from alexnet_cli.data.sample_readers import INDEX_DTYPE
from alexnet_cli.recipes import DataConfig

sys.path.insert(0, str(Path(__file__).parent))
from imagenet_scale import TRAIN, build  # noqa: E402  (the ImageNet-size fixture)


def loader_for(root: Path, workers: int):
    module = DaliDataModule(root, DataConfig(device="cpu", batch_size=64, num_threads=2, py_workers=workers,
                                             normalize="channel"), crop=227)
    return module.loader("train", "train", shard=(0, 1))


def opens_per_epoch(root: Path, workers: int) -> tuple[int, int, int]:
    loader = loader_for(root, workers)
    images = sum(len(labels) for _, labels in loader)
    loader.close()
    return loader.files_opened, images, loader.pipelines_built


def images_per_second(root: Path, batches: int, warmup: int = 3) -> float:
    loader = loader_for(root, 0)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            _, labels = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            _, labels = next(iterator)
        seen += len(labels)
    seconds = time.perf_counter() - started
    loader.close()
    return seen / seconds


def packed_at_imagenet_size(photos: Path, root: Path) -> None:
    """An index of TRAIN samples (PHOTOS' sizes round-robin) over sparse shards of ~1 GiB, as pack cuts them."""
    if (root / "dataset.json").is_file():
        return
    (root / "train").mkdir(parents=True, exist_ok=True)
    sizes = np.array([p.stat().st_size for p in sorted((photos / "train").glob("*/*.JPEG"))], np.uint64)
    rows = np.zeros(TRAIN, INDEX_DTYPE)
    rows["size"] = sizes[np.arange(TRAIN) % len(sizes)]
    member = 512 + (rows["size"] + 511) // 512 * 512 + 1024  # the JPEG's header and blocks, then the label's
    ends = np.cumsum(member.astype(np.uint64))
    rows["shard"] = (ends - 1) // DEFAULT_SHARD_BYTES
    starts = np.searchsorted(rows["shard"], np.arange(int(rows["shard"].max()) + 2))
    for shard in range(len(starts) - 1):
        first, last = starts[shard], starts[shard + 1]
        base = ends[first] - member[first]
        rows["offset"][first:last] = ends[first:last] - member[first:last] - base + 512
        with open(root / "train" / shard_name(shard), "wb") as handle:
            handle.truncate(int(ends[last - 1] - base) + 1024)  # sparse: nothing is read at start-up
        (root / "train" / dali_index_name(shard)).write_text("v1.2 0\n")
    rows["label"] = np.arange(TRAIN) * 1000 // TRAIN
    np.save(root / "train" / INDEX_FILE, rows)
    np.save(root / "train" / KEYS_FILE, np.array([f"n{k:08d}".encode() for k in range(TRAIN)]))
    (root / "classes.json").write_text((root.parent / "imagenet" / "classes.json").read_text())
    (root / "dataset.json").write_text(json.dumps({"packed": {"format": 1}}))


def timed(function, repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    photos, work = args.photos.resolve(), args.work.resolve()
    packed = work / "photos-packed"
    if not (packed / "dataset.json").is_file():
        pack_dataset(PackOptions(photos, packed))
    images = len(list_split(photos, "train", read_classes(photos)))
    shards = len(list((packed / "train").glob("*.tar")))
    print(f"cores {len(os.sched_getaffinity(0))}; PHOTOS {photos}: {images} training images; packed: {shards} shard(s)")
    for workers in (0, 1):
        files, shards = opens_per_epoch(photos, workers), opens_per_epoch(packed, workers)
        print(f"opens per epoch, {workers} reader process(es): files {files[0]:,} for {files[1]:,} images; "
              f"packed {shards[0]:,} ({shards[2]} pipeline(s))")
    build(photos, work / "imagenet")
    packed_at_imagenet_size(photos, work / "imagenet-packed")
    classes = read_classes(work / "imagenet")
    listing, files = timed(lambda: list_split(work / "imagenet", "train", classes), args.repeats)
    index, split = timed(lambda: read_packed_split(work / "imagenet-packed", "train", 1000), args.repeats)
    compact, reader = timed(files.reader, args.repeats)
    fresh, packed_reader = timed(split.reader, args.repeats)
    print(f"start-up at {len(files):,} images (medians of {args.repeats}): listing {listing:.2f} s + reader "
          f"{compact:.2f} s = {listing + compact:.2f} s; packed index {index:.3f} s + reader {fresh:.4f} s = "
          f"{index + fresh:.3f} s ({(index + fresh) / (listing + compact):.1%}); pickled into each reader process: "
          f"{len(pickle.dumps(reader)) / 2**20:.0f} MB vs {len(pickle.dumps(packed_reader)) / 2**20:.0f} MB")
    runs = {"files": [], "packed": []}
    for _ in range(args.repeats):  # alternating: drift on a shared machine hits both alike
        runs["files"].append(images_per_second(photos, args.batches))
        runs["packed"].append(images_per_second(packed, args.batches))
    file_rate, packed_rate = (statistics.median(runs[k]) for k in ("files", "packed"))
    print(f"img/s, DALI training loader, CPU, batch 64, {args.batches} batches × {args.repeats}: files "
          f"{file_rate:,.0f} {[round(r) for r in runs['files']]}, packed {packed_rate:,.0f} "
          f"{[round(r) for r in runs['packed']]}: packed/files {packed_rate / file_rate:.3f}")


if __name__ == "__main__":
    main()
