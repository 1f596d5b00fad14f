"""The run plan: a recipe and this machine resolved once into one frozen value that the layers below take
whole. The one place that counts ``trainer.devices`` over ``trainer.num_nodes`` and resolves the recipe's layout
(``benchmark train`` first refuses, by the values as written, a recipe that runs more than one process);
``train``, its dry run and ``benchmark train`` start from ``plan_run``. Each rank's own shard is known only
inside the run: ``parallel/ranks.running_layout`` asks the same ``Layout`` methods the plan asks."""

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.pytorch.accelerators import AcceleratorRegistry

from alexnet_cli.data.dataset_files import ClassInfo
from alexnet_cli.devices import accelerator_is_gpu
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.build import CompileOptions, compile_options, input_crop
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.parallel.layouts import layout_named
from alexnet_cli.parallel.spawn import refuse_more_devices_than_present
from alexnet_cli.recipes import CheckpointConfig, Recipe, TrainerConfig


@dataclass(frozen=True)
class RunPlan:
    """How a recipe runs here: its layout over how many devices and nodes, what each rank reads, the crop, the
    classes, the compile options. ``for_dataset`` adds what the dataset says (images, classes)."""

    recipe: Recipe
    layout: Layout
    on_gpu: bool  # trainer.accelerator runs on a CUDA GPU here
    devices_per_node: int | None  # None: -1 or "auto", every GPU of the machine that runs (none to count here)
    num_nodes: int
    crop: int  # the square the network reads
    compile: CompileOptions | None  # None: the network runs eagerly
    train_images: int = 0
    classes: tuple[ClassInfo, ...] = ()  # the dataset's classes, in label order

    @property
    def devices_known(self) -> bool:
        return self.devices_per_node is not None

    @property
    def devices(self) -> int:
        """Over all nodes: the run's world size (one process per device), 1 per node where it is unknown here."""
        return world_size(self.devices_per_node, self.num_nodes)

    @property
    def data_parallel(self) -> int:
        """Into how many shards each batch is cut (devices, or device pairs under the two-GPU split)."""
        return self.layout.data_parallel_size(self.devices)

    @property
    def batch_size(self) -> int:
        return self.recipe.data.batch_size

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.data_parallel

    @property
    def image_size(self) -> int:
        """The shorter side images are resized to before cropping."""
        return self.recipe.data.resize_size

    @property
    def num_classes(self) -> int:
        return self.recipe.model.num_classes or len(self.classes)

    @property
    def steps_per_epoch(self) -> int:
        return (self.train_images // self.data_parallel) // self.batch_size

    @property
    def epochs(self) -> int | None:
        return self.recipe.trainer.max_epochs

    @property
    def total_steps(self) -> int | None:
        trainer = self.recipe.trainer
        if trainer.max_steps != -1:
            return trainer.max_steps
        return self.steps_per_epoch * trainer.max_epochs if trainer.max_epochs else None

    @property
    def description(self) -> str:
        """How the devices share the network and the batch, in words."""
        return self.layout.describe(self.devices, self.batch_size)

    @property
    def precision(self) -> str:
        return self.recipe.trainer.precision_name

    def for_dataset(self, train_images: int, classes: Sequence) -> "RunPlan":
        return replace(self, train_images=train_images, classes=tuple(classes))


def plan_run(recipe: Recipe, train_images: int = 0, classes: Sequence = ()) -> RunPlan:
    """The plan of ``recipe`` on this machine, refused where the run would be: the CPU processes, the trainer's
    arguments, the device count (and what the layout can spread itself over), the crop. ``prepare_run`` asks the
    rest, which needs the network: the layout's model check, then compiling under the layout."""
    trainer = recipe.trainer
    on_gpu = accelerator_is_gpu(str(trainer.accelerator))
    if isinstance(trainer.devices, int) and not on_gpu and trainer.accelerator in ("cpu", "auto"):
        # Lightning starts as many CPU processes as asked, however few the cores (a GPU count it checks itself)
        refuse_more_devices_than_present("trainer.devices", trainer.devices, "cpu")
    check_trainer_arguments(recipe)  # the accelerator last: the device count below depends on it
    per_node = devices_per_node(trainer)
    devices = world_size(per_node, trainer.num_nodes)
    layout = layout_named(trainer.strategy, devices)
    if per_node is not None:  # -1 / "auto" on a machine without GPUs: known only where it runs
        layout.check_devices(devices, named=trainer.strategy)
    return RunPlan(recipe, layout, on_gpu, per_node, trainer.num_nodes, crop_size(recipe),
                   compile_options(recipe.model), train_images, tuple(classes))


def crop_size(recipe: Recipe) -> int:
    """The square the recipe's network reads: ``data.crop_size``, or its arch's own."""
    return input_crop(recipe.model.arch, recipe.data.crop_size)


def check_compiles(recipe: Recipe, layout: Layout) -> None:
    """Refuse model.compile where the layout's forward exchanges activations between ranks."""
    if recipe.model.compile and not layout.compiles_model:
        raise AlexnetError(f"model.compile=true: the {layout.kind} layout (trainer.strategy={layout.name}) exchanges "
                           "activations inside its forward pass, which torch.compile cannot capture; use it with one "
                           "device or ddp")


def device_count(recipe: Recipe) -> int:
    """Devices over all nodes, as ``devices_per_node`` counts them (1 per node where that is unknown here)."""
    return world_size(devices_per_node(recipe.trainer), recipe.trainer.num_nodes)


def world_size(per_node: int | None, num_nodes: int) -> int:
    """One process per device over every node; 1 per node where the count is unknown here (-1 / "auto")."""
    return (per_node or 1) * num_nodes


def devices_per_node(trainer: TrainerConfig) -> int | None:
    """``trainer.devices`` as the count Lightning will use on this machine, refused where Lightning would refuse
    it: a list counts its ids; -1 and "auto" are every GPU here (where there is none to count: None, known only
    on the machine that runs), and one process on the CPU, which takes no -1 and no list of ids."""
    devices, on_gpu = trainer.devices, accelerator_is_gpu(str(trainer.accelerator))
    if isinstance(devices, list):
        if not on_gpu:
            raise AlexnetError(f"trainer.devices={devices}: the CPU takes a number of processes, not device ids")
        if len(set(devices)) != len(devices) or not all(isinstance(d, int) and d >= 0 for d in devices):
            raise AlexnetError(f"trainer.devices={devices}: give distinct GPU ids (0, 1, ...)")
        return len(devices)
    if devices in (-1, "auto"):
        if not on_gpu:
            if devices == -1:
                raise AlexnetError("trainer.devices=-1 means every GPU; on the CPU give a number of processes")
            return 1  # Lightning's "auto" on the CPU
        return torch_cuda_devices() or None
    return int(devices)


def torch_cuda_devices() -> int:
    return torch.cuda.device_count()


def check_accelerator(accelerator: Any) -> None:
    known = ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]
    if accelerator not in known:
        raise AlexnetError(f"trainer.accelerator={accelerator!r}: use one of {', '.join(known)}")


# trainer.logger: the module each logger needs beside CSV (always there), any one of them will do
_LOGGER_MODULES = {"csv": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_trainer_arguments(recipe: Recipe) -> None:
    """Refuse what ``trainer.trainer_arguments`` or ``lightning.Trainer`` would: the checkpoint schedule, the
    logger, the accelerator."""
    check_checkpoint_schedule(recipe.checkpoint)
    check_logger(recipe.trainer.logger)
    check_accelerator(recipe.trainer.accelerator)


def check_checkpoint_schedule(config: CheckpointConfig) -> None:
    if config.every_n_train_steps and config.every_minutes:
        raise AlexnetError("checkpoint.every_n_train_steps and checkpoint.every_minutes: set one of them")


def check_logger(name: str | None) -> None:
    """CSV always works; TensorBoard and W&B when the user has installed them."""
    if (name or "csv") not in _LOGGER_MODULES:
        raise AlexnetError(f"trainer.logger {name!r}: use csv, tensorboard or wandb")
    needs = _LOGGER_MODULES[name or "csv"]
    if needs and not any(importlib.util.find_spec(module) for module in needs):
        raise AlexnetError(f"trainer.logger {name}: pip install {needs[0]} (or use trainer.logger=csv)")
