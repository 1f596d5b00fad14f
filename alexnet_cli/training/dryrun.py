"""``alexnet train --dry-run``: what a run would do, without doing it."""

import json
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import Recipe


@dataclass
class RunPlan:
    recipe: Recipe
    devices: int
    data_parallel: int  # batch shards: devices, or device pairs for the two-GPU split
    global_batch: int
    train_images: int
    steps_per_epoch: int
    epochs: int | None
    total_steps: int | None
    images_per_second: float | None  # from a `benchmark model --json` file, if given
    estimated_hours: float | None
    layout: str = ""  # how the devices share the network and the batch, in words


def plan_run(recipe: Recipe, train_images: int, *, benchmark_json: Path | None = None) -> RunPlan:
    """The shape of a run of ``recipe`` over ``train_images`` training images."""
    trainer = recipe.trainer
    devices = device_count(recipe)
    data_parallel = data_parallel_size(recipe)
    global_batch = recipe.data.batch_size * max(1, data_parallel)
    steps = (train_images // max(1, data_parallel)) // recipe.data.batch_size
    epochs = trainer.get("max_epochs")
    total = trainer.get("max_steps") if trainer.get("max_steps", -1) not in (-1, None) else (
        steps * epochs if epochs else None)
    speed = _benchmark_speed(benchmark_json, recipe.model.arch) if benchmark_json else None
    hours = None
    if speed and total:
        hours = total * global_batch / (speed * max(1, data_parallel)) / 3600
    return RunPlan(recipe, devices, data_parallel, global_batch, train_images, steps, epochs, total, speed, hours,
                   describe_layout(recipe, devices))


def describe_layout(recipe: Recipe, devices: int) -> str:
    strategy = recipe.trainer.get("strategy")
    if strategy == "towers":
        pairs = max(1, devices // 2)
        return (f"the paper's two-GPU split: {pairs} pair(s) of towers, each pair one network on one batch"
                + (f", data-parallel over the {pairs} pairs" if pairs > 1 else ""))
    if strategy == "weird-trick":
        return (f"the 2014 layout: conv layers data-parallel over {devices} devices (each its own batch), every FC "
                f"layer split by rows {devices} ways over all {devices}×{recipe.data.batch_size} images")
    if devices > 1:
        return f"data-parallel (DDP): {devices} copies of the network, gradients averaged"
    return "one device"


def device_count(recipe: Recipe) -> int:
    """Devices over all nodes; -1/"auto" count as 1 per node here (the machine that runs may differ)."""
    devices = recipe.trainer.get("devices", 1)
    devices = devices if isinstance(devices, int) and devices > 0 else 1
    return devices * recipe.trainer.get("num_nodes", 1)


def data_parallel_size(recipe: Recipe) -> int:
    """Batch shards: every device, or every pair of devices under the paper's two-GPU split."""
    devices = device_count(recipe)
    return max(1, devices // 2 if recipe.trainer.get("strategy") == "towers" else devices)


def _benchmark_speed(path: Path, arch: str) -> float:
    """train img/s of ``arch`` per device from an ``alexnet benchmark model --json`` file."""
    try:
        rows = json.loads(Path(path).read_text())["results"]
    except (OSError, ValueError, KeyError):
        raise AlexnetError(f"--benchmark-json {path} is not the output of 'alexnet benchmark model --json'") from None
    matching = [r["train_img_s"] for r in rows if r.get("arch") == arch]
    if not matching:
        raise AlexnetError(f"--benchmark-json {path} has no figures for arch {arch!r}")
    return max(matching)
