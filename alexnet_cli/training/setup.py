"""What a run is made of, checked before anything is written: ``train`` and ``train --dry-run`` start here."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn

from alexnet_cli import __version__
from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.sampling import check_one_batch_per_shard
from alexnet_cli.devices import require_gpu
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import build_network
from alexnet_cli.models.checkpoint_meta import CheckpointMeta
from alexnet_cli.parallel.ranks import data_parallel_shard
from alexnet_cli.recipes import Recipe
from alexnet_cli.training.plan import RunPlan, check_compiles, plan_run
from alexnet_cli.training.resume import ResumePoint, check_resumable, resolve_resume
from alexnet_cli.training.run_dir import check_run_dir


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"


@dataclass
class RunSetup:
    """What a run is made of, checked: everything ``train`` refuses is refused while making it."""

    plan: RunPlan
    resumes: ResumePoint | None  # the checkpoint a resumed run continues from, and where it stands
    run_dir: Path
    datamodule: DaliDataModule
    model: nn.Module
    meta: dict[str, Any]
    replaces_run: bool = False  # --overwrite given and the run directory held a run
    resumed_dir: Path | None = None  # on resume: the run folder of the checkpoint (None: it was in none)
    continues_in_place: bool = False  # a resume whose run goes on in its own folder (not --out elsewhere)

    @property
    def checkpoint(self) -> Path | None:
        return self.resumes.checkpoint if self.resumes is not None else None

    @property
    def changes(self) -> list[str]:
        """On resume: the recipe keys that differ from the checkpoint's."""
        return self.resumes.changes if self.resumes is not None else []


def prepare_run(recipe: Recipe, data: Path, *, out: Path | None = None, resume: Path | None = None,
                overwrite: bool = False) -> RunSetup:
    """Resolve the plan, the resume, the run directory, the data and the network, and check them against each
    other, without writing anything: ``train`` and ``train --dry-run`` both start here, so a dry run refuses
    what the run would. Each check is asked here once; nothing is built only for the error its constructor
    would raise."""
    plan = plan_run(recipe)
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
    datamodule = DaliDataModule(data, recipe.data, crop=plan.crop, seed=recipe.seed, shard_of=data_parallel_shard,
                                collective_forward=plan.layout.collective_forward)
    plan = plan.for_dataset(len(datamodule.split("train")), datamodule.classes)
    if plan.num_classes != datamodule.num_classes:
        raise AlexnetError(f"model.num_classes is {plan.num_classes} but {data} has {datamodule.num_classes} classes")
    check_one_batch_per_shard(plan.train_images, plan.batch_size, plan.data_parallel)
    L.seed_everything(recipe.seed, workers=False, verbose=False)  # the weights are a function of the seed
    model = build_network(recipe.model, plan.num_classes)
    plan.layout.check_model(model)  # a split layout's needs, refused before its processes start
    check_compiles(recipe, plan.layout)
    meta = checkpoint_meta(plan, datamodule.normalization, datamodule.fingerprint)
    resumes = None
    if checkpoint is not None:
        resumes = check_resumable(checkpoint, recipe, datamodule.classes, datamodule.fingerprint, data)
    return RunSetup(plan, resumes, run_dir, datamodule, model, meta, replaces_run,
                    Path(resumed_dir) if resumed_dir is not None else None, in_place)


def check_gpu_present(plan: RunPlan) -> None:
    accelerator = str(plan.recipe.trainer.accelerator)
    if accelerator in ("gpu", "cuda"):
        require_gpu(f"trainer.accelerator={accelerator}", "train on its CPU with --set trainer.accelerator=cpu "
                    "--set data.device=cpu (or --recipe cpu-demo)")
    if plan.recipe.data.device == "gpu":
        require_gpu("data.device=gpu", "DALI decodes on the CPU with --set data.device=cpu")


def checkpoint_meta(plan: RunPlan, normalization: Normalization, fingerprint: str | None = None) -> dict[str, Any]:
    """What a checkpoint must carry to be evaluated and checked without the recipe or dataset, in its stored
    form (``CheckpointMeta.to_dict``): the LightningModule saves it into every checkpoint as it is."""
    recipe = plan.recipe
    return CheckpointMeta.of_run(recipe.model, recipe.to_dict(), num_classes=plan.num_classes,
                                 classes=list(plan.classes), crop=plan.crop, resize_size=plan.image_size,
                                 normalization=normalization, version=__version__,
                                 dataset_fingerprint=fingerprint).to_dict()
