"""``alexnet train``: recipe → (datamodule, model, LightningModule) → Trainer → run directory.

    RUN_DIR/recipe.yaml                the resolved recipe
    RUN_DIR/metrics.csv                every logged metric (CSVLogger)
    RUN_DIR/checkpoints/last.ckpt      the latest state, to resume from
    RUN_DIR/checkpoints/best.ckpt      the best val/top1 so far
"""

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from alexnet_cli import __version__
from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import Recipe, load_recipe

# Archs whose classifier expects a fixed feature map, hence a fixed crop.
_FIXED_INPUT = {"paper", "d2l", "keras-v1", "keras-v2", "tf1-bench"}


@dataclass
class TrainResult:
    run_dir: Path
    best_top1: float | None
    best_top5: float | None
    best_epoch: int | None
    seconds: float
    images_per_second: float
    data_wait_fraction: float
    global_step: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}"


def crop_size(recipe: Recipe) -> int:
    from alexnet_cli.models import ARCHS

    arch = recipe.model.arch
    if arch not in ARCHS:
        raise AlexnetError(f"model.arch: unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    crop = recipe.data.crop_size or ARCHS[arch].input_size
    if arch in _FIXED_INPUT and crop != ARCHS[arch].input_size:
        raise AlexnetError(f"data.crop_size {crop}: arch {arch!r} takes {ARCHS[arch].input_size}×"
                           f"{ARCHS[arch].input_size} inputs")
    return crop


def resolve_resume(resume: Path) -> tuple[Path, Path]:
    """A checkpoint file, or a run directory meaning its checkpoints/last.ckpt → (checkpoint, run dir)."""
    resume = Path(resume)
    if resume.is_dir():
        checkpoint = resume / "checkpoints" / "last.ckpt"
        if not checkpoint.exists():
            raise AlexnetError(f"--resume {resume}: no checkpoints/last.ckpt in that run directory")
        return checkpoint.resolve(), resume
    if not resume.is_file():
        raise AlexnetError(f"--resume {resume}: no such checkpoint or run directory")
    return resume.resolve(), resume.resolve().parent.parent


def _check_resumable(checkpoint: Path, recipe: Recipe, classes: list) -> None:
    """Refuse what cannot change across a resume: the arch and the classes."""
    from alexnet_cli.checkpoints import read_file

    meta = read_file(checkpoint, mmap=True).get("alexnet_cli")  # Lightning reads the weights next
    if not isinstance(meta, dict):
        raise AlexnetError(f"{checkpoint} was not written by 'alexnet train'; it cannot be resumed")
    if meta["arch"] != recipe.model.arch:
        raise AlexnetError(f"{checkpoint} holds arch {meta['arch']!r}; the recipe says {recipe.model.arch!r}")
    if [c["wnid"] for c in meta["classes"]] != [c.wnid for c in classes]:
        raise AlexnetError(f"{checkpoint} was trained on other classes than this dataset's")


def run(recipe: str | Recipe, data: Path, *, out: Path | None = None, overrides: list[str] | None = None,
        quiet: bool = False, resume: Path | None = None) -> TrainResult:
    """Train a recipe on a prepared dataset; returns where everything went and the best metrics.

    ``resume``: a checkpoint (or a run directory's last.ckpt) to continue from, whatever
    recipe wrote it, as long as arch and classes agree (a single-gpu checkpoint resumes
    as two-gpu and back).
    """
    import lightning as L

    from alexnet_cli.callbacks import BestMetrics, ThroughputMeter
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.models import build_model
    from alexnet_cli.module import AlexNetModule

    _quiet_lightning(quiet)
    if isinstance(recipe, str):
        recipe = load_recipe(recipe, overrides)
    data = Path(data)
    checkpoint = None
    if resume is not None:
        checkpoint, resumed_dir = resolve_resume(resume)
        out = out if out is not None else resumed_dir
    run_dir = Path(out) if out is not None else default_run_dir(recipe)
    crop = crop_size(recipe)
    L.seed_everything(recipe.seed, workers=False, verbose=False)
    datamodule = DaliDataModule(data, recipe.data, crop=crop, seed=recipe.seed)
    num_classes = recipe.model.num_classes or datamodule.num_classes
    if num_classes != datamodule.num_classes:
        raise AlexnetError(f"model.num_classes is {num_classes} but {data} has {datamodule.num_classes} classes")
    model = build_model(recipe.model.arch, num_classes, recipe.model.dropout, init=recipe.model.init,
                        fc_width=recipe.model.fc_width)
    meta = checkpoint_meta(recipe, datamodule, num_classes, crop)
    module = AlexNetModule(model, recipe.optim, num_classes=num_classes, meta=meta,
                           batch_size=recipe.data.batch_size)
    if checkpoint is not None:
        _check_resumable(checkpoint, recipe, datamodule.classes)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    throughput, best = ThroughputMeter(), BestMetrics()
    arguments = trainer_arguments(recipe, run_dir, quiet, [throughput, best])
    if checkpoint is not None:
        _keep_previous_metrics(arguments["logger"], run_dir)
    trainer = L.Trainer(**arguments)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None,
                weights_only=True)
    checkpoints = run_dir / "checkpoints"
    return TrainResult(
        run_dir=run_dir, best_top1=best.top1, best_top5=best.top5, best_epoch=best.epoch,
        seconds=time.perf_counter() - started, images_per_second=throughput.images_per_second,
        data_wait_fraction=throughput.data_wait_fraction, global_step=trainer.global_step,
        last_checkpoint=_existing(checkpoints / "last.ckpt"), best_checkpoint=_existing(checkpoints / "best.ckpt"),
    )


def checkpoint_meta(recipe: Recipe, datamodule, num_classes: int, crop: int) -> dict[str, Any]:
    """What a checkpoint must carry to be evaluated and checked without the recipe or dataset."""
    import torch

    norm = datamodule.normalization
    normalization = {"mode": recipe.data.normalize, "channel_mean": [float(v) for v in norm.channel_mean],
                     "channel_std": [float(v) for v in norm.channel_std]}
    if norm.mean_image is not None:
        normalization["mean_image"] = torch.as_tensor(norm.mean_image)
    return {
        "version": __version__, "arch": recipe.model.arch, "num_classes": num_classes,
        "dropout": recipe.model.dropout, "fc_width": recipe.model.fc_width, "crop": crop,
        "resize_size": recipe.data.resize_size,
        "classes": [{"index": c.index, "wnid": c.wnid, "words": c.words} for c in datamodule.classes],
        "recipe": recipe.to_dict(), "normalization": normalization,
    }


def trainer_arguments(recipe: Recipe, run_dir: Path, quiet: bool, extra_callbacks: list) -> dict[str, Any]:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar

    from alexnet_cli.callbacks import FilterImageLogger

    args = dict(recipe.trainer)
    logger_name = args.pop("logger", "csv")
    validating = args.get("limit_val_batches", 1) != 0
    checkpoint_dir = run_dir / "checkpoints"
    callbacks = [
        *extra_callbacks,
        ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val/top1" if validating else None,
                        mode="max", save_top_k=1 if validating else 0,
                        save_last="link" if validating else True),  # link: no second 0.5 GB write
        LearningRateMonitor(logging_interval="epoch"),
        FilterImageLogger(),
    ]
    if recipe.checkpoint.every_n_train_steps:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="step-{step:08d}",
                                         every_n_train_steps=recipe.checkpoint.every_n_train_steps,
                                         save_top_k=recipe.checkpoint.keep_last, monitor="step", mode="max"))
    if not quiet:
        callbacks.append(RichProgressBar(refresh_rate=1, leave=True))
    if args.get("strategy") == "towers":
        from alexnet_cli.parallel.strategy import TowerParallelStrategy

        args["strategy"] = TowerParallelStrategy()
    args.setdefault("num_sanity_val_steps", 0)
    args.update(
        default_root_dir=str(run_dir), logger=make_logger(logger_name, run_dir), callbacks=callbacks,
        enable_progress_bar=not quiet, enable_model_summary=not quiet, use_distributed_sampler=False,
    )
    return args


def make_logger(name: str | None, run_dir: Path):
    """CSV always works; TensorBoard and W&B when the user has installed them."""
    from lightning.pytorch.loggers import CSVLogger

    csv = CSVLogger(save_dir=str(run_dir), name="", version="")
    if name in (None, "csv"):
        return csv
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return [csv, TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard")]
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return [csv, WandbLogger(save_dir=str(run_dir))]
    raise AlexnetError(f"trainer.logger {name!r}: use csv, tensorboard or wandb")


def _keep_previous_metrics(loggers, run_dir: Path) -> None:
    """A resumed run appends to metrics.csv (Lightning's CSV writer would start it afresh)."""
    from lightning.pytorch.loggers import CSVLogger

    path = run_dir / "metrics.csv"
    csv_logger = next(lg for lg in (loggers if isinstance(loggers, list) else [loggers]) if isinstance(lg, CSVLogger))
    if not path.is_file():
        return
    previous = path.read_text()
    writer = csv_logger.experiment  # creating the writer deletes metrics.csv on rank 0
    if hasattr(writer, "metrics_keys"):
        write_text_atomic(path, previous)
        writer.metrics_keys = previous.splitlines()[0].split(",") if previous else []


def _quiet_lightning(quiet: bool) -> None:
    """Hide Lightning's internal deprecation chatter always, and its banner lines with --quiet."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # ours are reduced by hand or rank 0's
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
