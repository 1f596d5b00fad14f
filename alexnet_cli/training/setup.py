"""What a run is made of, checked before anything is written: ``train`` and ``train --dry-run`` start here."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alexnet_cli import __version__
from alexnet_cli.devices import accelerator_is_gpu, require_gpu
from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.layout import Layout
from alexnet_cli.recipes import Recipe
from alexnet_cli.training.resume import check_resumable, resolve_resume
from alexnet_cli.training.run_dir import check_run_dir
from alexnet_cli.training.trainer import check_trainer_arguments, device_count, devices_per_node, recipe_layout


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"


def crop_size(recipe: Recipe) -> int:
    from alexnet_cli.models.build import input_crop

    return input_crop(recipe.model.arch, recipe.data.crop_size)


@dataclass
class RunSetup:
    """What a run is made of, checked: everything ``train`` refuses is refused while making it."""

    checkpoint: Path | None  # the checkpoint a resumed run continues from
    run_dir: Path
    crop: int
    datamodule: Any
    num_classes: int
    model: Any
    meta: dict[str, Any]
    changes: list[str]  # on resume: the recipe keys that differ from the checkpoint's
    replaces_run: bool = False  # --overwrite given and the run directory held a run
    resumed_dir: Path | None = None  # on resume: the run folder of the checkpoint (None: it was in none)

    @property
    def continues_in_place(self) -> bool:
        """A resume whose run goes on in its own folder (not --out elsewhere)."""
        return self.resumed_dir is not None and self.resumed_dir.resolve() == self.run_dir.resolve()


def prepare_run(recipe: Recipe, data: Path, *, out: Path | None = None, resume: Path | None = None,
                overwrite: bool = False) -> RunSetup:
    """Resolve the resume, the run directory, the data and the network, and check them against each other
    and against the Trainer arguments, without writing anything: ``train`` and ``train --dry-run`` both
    start here, so a dry run refuses what the run would. Each check is asked here once; nothing is built
    only for the error its constructor would raise."""
    import lightning as L

    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.data.sampling import check_one_batch_per_shard
    from alexnet_cli.models import build_network
    from alexnet_cli.parallel.ranks import data_parallel_shard

    check_cpu_devices_present(recipe)
    check_trainer_arguments(recipe)  # the accelerator first: the device count below depends on it
    layout = recipe_layout(recipe)
    if devices_per_node(recipe) is not None:  # -1 / "auto" on a machine without GPUs: known only where it runs
        layout.check_devices(device_count(recipe), named=recipe.trainer.get("strategy"))
    checkpoint, resumed_dir = None, None
    if resume is not None:
        checkpoint, resumed_dir = resolve_resume(resume)
        if out is None and resumed_dir is None:
            raise AlexnetError(f"--resume {resume} is not in a run's checkpoints folder: give --out RUN for the run "
                               "that continues it")
        out = out if out is not None else resumed_dir
    run_dir = Path(out) if out is not None else default_run_dir(recipe)
    # A run continues in its own folder; anywhere else it starts a new one there, refused over another run.
    in_place = resumed_dir is not None and run_dir.resolve() == Path(resumed_dir).resolve()
    replaces_run = False if in_place else check_run_dir(run_dir, overwrite)
    crop = crop_size(recipe)
    datamodule = DaliDataModule(data, recipe.data, crop=crop, seed=recipe.seed, shard_of=data_parallel_shard,
                                collective_forward=layout.collective_forward)
    num_classes = recipe.model.num_classes or datamodule.num_classes
    if num_classes != datamodule.num_classes:
        raise AlexnetError(f"model.num_classes is {num_classes} but {data} has {datamodule.num_classes} classes")
    check_one_batch_per_shard(len(datamodule.split("train")), recipe.data.batch_size,
                              layout.data_parallel_size(device_count(recipe)))
    L.seed_everything(recipe.seed, workers=False, verbose=False)  # the weights are a function of the seed
    model = build_network(recipe.model, num_classes)
    layout.check_model(model)  # a split layout's needs, refused before its processes start
    check_compiles(recipe, layout)
    meta = checkpoint_meta(recipe, datamodule, num_classes, crop)
    changes = check_resumable(checkpoint, recipe, datamodule.classes) if checkpoint is not None else []
    return RunSetup(checkpoint, run_dir, crop, datamodule, num_classes, model, meta, changes, replaces_run,
                    Path(resumed_dir) if resumed_dir is not None else None)


def check_compiles(recipe: Recipe, layout: Layout) -> None:
    """Refuse model.compile where the layout's forward exchanges activations between ranks."""
    if recipe.model.compile and not layout.compiles_model:
        raise AlexnetError(f"model.compile=true: the {layout.kind} layout (trainer.strategy={layout.name}) exchanges "
                           "activations inside its forward pass, which torch.compile cannot capture; use it with one "
                           "device or ddp")


def check_cpu_devices_present(recipe: Recipe) -> None:
    """Lightning starts as many CPU processes as trainer.devices asks, however few the cores (a GPU count it
    checks itself)."""
    from alexnet_cli.parallel.spawn import refuse_more_devices_than_present

    accelerator, devices = str(recipe.trainer.get("accelerator", "auto")), recipe.trainer.get("devices", 1)
    if isinstance(devices, int) and accelerator in ("cpu", "auto") and not accelerator_is_gpu(accelerator):
        refuse_more_devices_than_present("trainer.devices", devices, "cpu")


def check_gpu_present(recipe: Recipe) -> None:
    accelerator = str(recipe.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        require_gpu(f"trainer.accelerator={accelerator}", "train on its CPU with --set trainer.accelerator=cpu "
                    "--set data.device=cpu (or --recipe cpu-demo)")
    if recipe.data.device == "gpu":
        require_gpu("data.device=gpu", "DALI decodes on the CPU with --set data.device=cpu")


def checkpoint_meta(recipe: Recipe, datamodule, num_classes: int, crop: int) -> dict[str, Any]:
    """What a checkpoint must carry to be evaluated and checked without the recipe or dataset, in its stored
    form (``CheckpointMeta.to_dict``): the LightningModule saves it into every checkpoint as it is."""
    from alexnet_cli.models.checkpoint_meta import CheckpointMeta

    return CheckpointMeta.of_run(recipe.model, recipe.to_dict(), num_classes=num_classes,
                                 classes=datamodule.classes, crop=crop, resize_size=recipe.data.resize_size,
                                 normalization=datamodule.normalization, version=__version__).to_dict()
