"""What the GPU check's steps share: where they run (``Context``: the device, the recipe, the dataset of real
photos or the demo's, built once for both calls) and how each writes what it measures (``Recorder``)."""

import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from alexnet_cli.atomic import write_text_atomic

ENTRIES = 12_800  # 100 batches of 128: an epoch long enough for steady state (a 5-batch one read 1.025 syncs)


@dataclass(frozen=True)
class Context:
    out: Path
    work: Path  # the steps' shared scratch (the dataset of symlinks), kept between steps and calls
    smoke: bool
    photos: Path | None

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "gpu"

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu" if self.smoke else "cuda")

    def recipe(self, *extra: str):
        from alexnet_cli.recipes import load_recipe

        if self.smoke:
            return load_recipe("cpu-demo", ["data.batch_size=4", "model.fc_width=16", *extra])
        return load_recipe("single-gpu", list(extra))

    def dataset(self) -> Path:
        """A prepared set of ENTRIES training entries (symlinks, classes in turn over PHOTOS' training images),
        built once for the steps of both calls; complete once its marker is written."""
        root = self.work / ("entries-smoke" if self.smoke else "entries")
        photos = (self.photos or self._demo()).resolve()
        marker = root / ".complete"  # names the photos it links to: another PHOTOS rebuilds it
        if marker.is_file() and marker.read_text() == str(photos):
            return root
        shutil.rmtree(root, ignore_errors=True)
        entries = 64 if self.smoke else ENTRIES
        sources = _classes_in_turn(sorted((photos / "train").glob("*/*.JPEG")))
        classes = json.loads((photos / "classes.json").read_text())
        root.mkdir(parents=True, exist_ok=True)
        for name in ("classes.json", "dataset.json", "stats.npz"):
            if (photos / name).exists():
                (root / name).write_bytes((photos / name).read_bytes())
        # Classes in turn, so that every class has images in both splits (the layout refuses one without).
        for split, count in (("train", max(len(classes), entries)), ("val", max(len(classes), entries // 20))):
            for index in range(count):
                source = sources[index % len(sources)]
                target = root / split / source.parent.name / f"{index:06d}-{source.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.is_symlink():
                    target.symlink_to(source.resolve())
        marker.write_text(str(photos))
        return root

    def _demo(self) -> Path:
        from alexnet_cli.data.prepare.demo import DemoSpec, write_demo_source
        from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet

        spec = DemoSpec(classes=4, train_per_class=8, val_per_class=2, seed=1) if self.smoke else DemoSpec()
        prepared = self.work / "demo"
        if not (prepared / "dataset.json").is_file():
            source = write_demo_source(self.work / "demo-source", spec)
            prepare_imagenet(PrepareOptions(source, prepared, workers=os.cpu_count() or 1))
        return prepared


class Recorder:
    """A step's results, written to disk after every change (atomically): what the parent reads back."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {"rows": [], "figures": {}}

    def row(self, row: dict) -> None:
        self.data["rows"].append(row)
        self.save()

    def set(self, **values) -> None:
        self.data.update(values)
        self.save()

    def figure(self, key: str, value: float, higher_is_better: bool = True) -> None:
        """A number the next run is compared against."""
        self.data["figures"][key] = {"value": value, "higher_is_better": higher_is_better}
        self.save()

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=1, default=str))


def data_label(ctx: Context) -> str:
    return f"real photos ({ctx.photos})" if ctx.photos else "the demo's drawn shapes, not photos"


def earlier_environment(ctx: Context) -> dict:
    report = ctx.out / "gpu-check.json"
    return json.loads(report.read_text()).get("environment", {}) if report.is_file() else {}


def _classes_in_turn(files: list[Path]) -> list[Path]:
    """One file of each class, then the second of each, ...: any prefix as long as the class count covers all."""
    by_class: dict[str, list[Path]] = {}
    for path in files:
        by_class.setdefault(path.parent.name, []).append(path)
    columns = itertools.zip_longest(*by_class.values())
    return [path for column in columns for path in column if path is not None]
