"""``alexnet train --dry-run``: what a run would do, without doing it."""

import json
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import Recipe
from alexnet_cli.training.trainer import device_count, devices_per_node, recipe_layout


@dataclass
class RunPlan:
    recipe: Recipe
    devices: int  # over all nodes (1 per node where trainer.devices cannot be counted here: devices_known False)
    data_parallel: int  # batch shards: devices, or device pairs for the two-GPU split (the layout's)
    global_batch: int
    train_images: int
    steps_per_epoch: int
    epochs: int | None
    total_steps: int | None
    images_per_second: float | None  # from a `benchmark model --json` file, if given
    estimated_hours: float | None
    layout: str = ""  # how the devices share the network and the batch, in words
    devices_known: bool = True  # False: -1 / "auto" on a machine without the GPUs to count


def plan_run(recipe: Recipe, train_images: int, *, benchmark_json: Path | None = None) -> RunPlan:
    """The shape of a run of ``recipe`` over ``train_images`` training images."""
    trainer = recipe.trainer
    devices, layout = device_count(recipe), recipe_layout(recipe)
    data_parallel = layout.data_parallel_size(devices)
    global_batch = recipe.data.batch_size * data_parallel
    steps = (train_images // data_parallel) // recipe.data.batch_size
    epochs = trainer.get("max_epochs")
    total = trainer.get("max_steps") if trainer.get("max_steps", -1) not in (-1, None) else (
        steps * epochs if epochs else None)
    speed = _benchmark_speed(benchmark_json, recipe.model.arch) if benchmark_json else None
    hours = None
    if speed and total:
        hours = total * global_batch / (speed * data_parallel) / 3600
    return RunPlan(recipe, devices, data_parallel, global_batch, train_images, steps, epochs, total, speed, hours,
                   layout.describe(devices, recipe.data.batch_size), devices_per_node(recipe) is not None)


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
