"""ImageNet's size on this machine: what a user's first hour touches, on a dataset of ILSVRC2012's shape.

    python scripts/imagenet_scale.py PHOTOS WORK [--json OUT] [--skip NAME ...]

PHOTOS is a dataset prepared by 'alexnet prepare-imagenet' (e.g. the 1000 sample photos at 256×256).
WORK/imagenet gets 1,281,167 training entries in 1,000 classes and 50,000 validation entries, each
a symbolic link to one of PHOTOS' training images (round-robin), plus PHOTOS' statistics: the
prepared layout at full size, built in about a minute and kept for the next run. Every figure
is printed beside the same measurement on PHOTOS itself (1,000 images), so that what grows with
the dataset shows as a ratio. Nothing here is a test: it prints figures.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TRAIN, VAL, CLASSES = 1_281_167, 50_000, 1000


def build(photos: Path, root: Path) -> float:
    """The full-size layout by symlinks; returns the seconds it took (0 if it was there)."""
    done = root / ".complete"
    if done.is_file():
        return 0.0
    started = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    sources = sorted(str(p.resolve()) for p in (photos / "train").glob("*/*.JPEG"))
    wnids = [f"n{90000000 + k:08d}" for k in range(CLASSES)]
    (root).mkdir(parents=True)
    classes = [{"index": k, "wnid": w, "words": f"class {k}"} for k, w in enumerate(wnids)]
    (root / "classes.json").write_text(json.dumps(classes))
    info = json.loads((photos / "dataset.json").read_text())
    info["counts"] = {"train": TRAIN, "val": VAL}
    (root / "dataset.json").write_text(json.dumps(info))
    shutil.copy(photos / "stats.npz", root / "stats.npz")
    link = 0
    for split, total in (("train", TRAIN), ("val", VAL)):
        for k, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            count = total // CLASSES + (1 if k < total % CLASSES else 0)
            for n in range(count):
                os.symlink(sources[link % len(sources)], folder / f"{wnid}_{n}.JPEG")
                link += 1
    done.write_text("")
    return time.perf_counter() - started


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def setup_seconds(root: Path) -> dict:
    """Datamodule set-up: classes, statistics, both splits listed, the training loader's first batch."""
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.recipes import load_recipe

    recipe = load_recipe("cpu-demo")
    listing, module = timed(lambda: _listed(DaliDataModule(root, recipe.data, crop=227)))
    loader = module.loader("train", "train", shard=(0, 1))
    first, _ = timed(lambda: next(iter(loader)))
    loader.close()
    return {"datamodule_and_listing_s": listing, "first_batch_s": first}


def _listed(module):
    module.split("train")
    module.split("val")
    return module


def pipeline_img_s(roots: dict[str, Path], batch_size: int, repeats: int, batches: int = 30) -> dict:
    """The DALI training pipeline alone (cpu-demo's settings) on each root, alternating, medians."""
    from alexnet_cli.bench.data_speed import _images_per_second
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.progress import SilentProgress
    from alexnet_cli.recipes import load_recipe

    recipe = load_recipe("cpu-demo", [f"data.batch_size={batch_size}"])
    runs = {name: [] for name in roots}
    for _ in range(repeats):
        for name, root in roots.items():
            loader = DaliDataModule(root, recipe.data, crop=227).loader("train", "train", shard=(0, 1))
            with SilentProgress().task("", None) as task:
                runs[name].append(_images_per_second(loader, batches, 5, batch_size, task))
            loader.close()
    return {name: {"median": statistics.median(r), "runs": r} for name, r in runs.items()}


def command_seconds(*args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "alexnet_cli", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"alexnet {' '.join(args)} failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def eval_setup_seconds(root: Path) -> float:
    """An evaluation's set-up: the val split listed and the ten-crop loader's first batch."""
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.recipes import DataConfig

    def first_batch():
        module = DaliDataModule(root, DataConfig(device="cpu", batch_size=32, num_threads=2), crop=227)
        loader = module.loader("val", "ten_crop", shard=(0, 1))
        next(iter(loader))
        loader.close()

    return timed(first_batch)[0]


def neighbours_search(work: Path, rows: int = TRAIN, queries: int = 4) -> dict:
    """Search a synthetic rows × 4096 fp16 code file (embedding 1.28 M images on 2 cores takes hours)."""
    from alexnet_cli.inspection.neighbors import CODE_WIDTH, CodeStore, nearest

    store = CodeStore(work / "codes", rows, CODE_WIDTH)
    if not store.complete:
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        chunk = 65_536
        for start in range(store.done, rows, chunk):
            count = min(chunk, rows - start)
            store.write(start, rng.random((count, CODE_WIDTH), dtype=np.float32))
            store.mark_done(start + count)
        write_s = time.perf_counter() - started
    else:
        write_s = 0.0
    query = np.random.default_rng(1).random((queries, CODE_WIDTH), dtype=np.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    search_s, _ = timed(nearest, store, query, k=6)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": rows, "queries": queries, "code_file_gb": store.path.stat().st_size / 1e9,
            "write_s": write_s, "search_s": search_s, "peak_rss_mb": peak / 1024,
            "peak_rss_growth_mb": (peak - rss_before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args()
    big = args.work / "imagenet"
    report = {"build_s": build(args.photos, big)}
    roots = {"imagenet_size": big, "photos": args.photos}
    print(f"built in {report['build_s']:.0f} s", flush=True)
    if "setup" not in args.skip:
        report["setup"] = {name: setup_seconds(root) for name, root in roots.items()}
        print(report["setup"], flush=True)
    if "data" not in args.skip:
        for batch in (64, 128):
            report[f"pipeline_batch_{batch}"] = pipeline_img_s(roots, batch, args.repeats)
            print(batch, report[f"pipeline_batch_{batch}"], flush=True)
    if "train" not in args.skip:
        for name, root in roots.items():
            report[f"dry_run_s_{name}"] = command_seconds("train", "--recipe", "cpu-demo", "--data", str(root),
                                                          "--dry-run")
            run_dir = args.work / f"first-step-{name}"
            shutil.rmtree(run_dir, ignore_errors=True)
            report[f"one_step_run_s_{name}"] = command_seconds(
                "train", "--recipe", "cpu-demo", "--data", str(root), "--out", str(run_dir), "--quiet",
                "--set", "trainer.max_steps=1", "--set", "trainer.limit_val_batches=0")
            print(name, report[f"dry_run_s_{name}"], report[f"one_step_run_s_{name}"], flush=True)
    if "eval" not in args.skip:
        report["eval_setup_s"] = {name: eval_setup_seconds(root) for name, root in roots.items()}
        print(report["eval_setup_s"], flush=True)
    if "neighbors" not in args.skip:
        report["neighbors"] = neighbours_search(args.work)
        print(report["neighbors"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
