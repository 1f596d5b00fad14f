"""``alexnet train``: recipe → (datamodule, model, LightningModule) → Trainer → run directory.

    RUN_DIR/recipe.yaml                the resolved recipe
    RUN_DIR/metrics.csv                every logged metric (CSVLogger)
    RUN_DIR/checkpoints/last.ckpt      the latest state (each epoch, every N steps, on SIGTERM): resume from it
    RUN_DIR/checkpoints/best.ckpt      the best val/top1 so far
    RUN_DIR/checkpoints/step-N.ckpt    with checkpoint.every_n_train_steps: the newest keep_last of them

Every checkpoint is written to a hidden temporary name and renamed into place.
"""

import logging
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from alexnet_cli import __version__
from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.errors import AlexnetError, TrainingStopped
from alexnet_cli.recipes import Recipe, load_recipe

# Archs whose classifier expects a fixed feature map, hence a fixed crop.
_FIXED_INPUT = {"paper", "paper-one-tower", "d2l", "keras-v1", "keras-v2", "tf1-bench"}


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
    recipe_changes: list[str]  # on resume: the recipe keys that differ from the checkpoint's


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
    """A checkpoint file, or a run directory meaning its newest checkpoint → (checkpoint, run dir)."""
    resume = Path(resume)
    if resume.is_dir():
        checkpoint = latest_checkpoint(resume / "checkpoints")
        if checkpoint is None:
            raise AlexnetError(f"--resume {resume}: no checkpoint in {resume / 'checkpoints'} to resume from")
        return checkpoint.resolve(), resume
    if not resume.is_file():
        raise AlexnetError(f"--resume {resume}: no such checkpoint or run directory")
    return resume.resolve(), resume.resolve().parent.parent


def latest_checkpoint(directory: Path) -> Path | None:
    """The run's newest state: last.ckpt, unless the run died between writing step-N.ckpt and last.ckpt."""
    from alexnet_cli.models.checkpoints import read_file

    candidates = [p for p in [directory / "last.ckpt", *sorted(directory.glob("step-*.ckpt"))] if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: read_file(p, mmap=True).get("global_step", -1))


# Recipe keys a resumed run cannot change: they shape the weights or the scheduler state.
# (The number of classes is checked through the classes themselves.)
_FIXED_ON_RESUME = ("model.arch", "model.fc_width", "optim.schedule")


def check_resumable(checkpoint: Path, recipe: Recipe, classes: list) -> list[str]:
    """Refuse what cannot change across a resume; return the recipe keys that did change, as
    ``key: old → new`` lines (epochs, lr, batch size... are allowed)."""
    from alexnet_cli.models.checkpoints import read_file

    meta = read_file(checkpoint, mmap=True).get("alexnet_cli")  # Lightning reads the weights next
    if not isinstance(meta, dict):
        raise AlexnetError(f"{checkpoint} was not written by 'alexnet train'; it cannot be resumed")
    if meta["arch"] != recipe.model.arch:
        raise AlexnetError(f"{checkpoint} holds arch {meta['arch']!r}; the recipe says {recipe.model.arch!r}")
    if [c["wnid"] for c in meta["classes"]] != [c.wnid for c in classes]:
        raise AlexnetError(f"{checkpoint} was trained on other classes than this dataset's")
    before, after = _flatten(meta.get("recipe", {})), _flatten(recipe.to_dict())
    changed = [key for key in sorted(set(before) | set(after))
               if key not in ("name", "description") and before.get(key) != after.get(key)]
    for key in changed:
        if key in _FIXED_ON_RESUME and before.get(key) is not None:
            raise AlexnetError(f"{checkpoint} was trained with {key}={before.get(key)!r}; the recipe says "
                               f"{after.get(key)!r}, which a resumed run cannot change")
    return [f"{key}: {before.get(key)!r} → {after.get(key)!r}" for key in changed]


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run(recipe: str | Recipe, data: Path, *, out: Path | None = None, overrides: list[str] | None = None,
        quiet: bool = False, resume: Path | None = None, overwrite: bool = False) -> TrainResult:
    """Train a recipe on a prepared dataset; returns where everything went and the best metrics.

    ``resume``: a checkpoint (or a run directory's last.ckpt) to continue from, whatever
    recipe wrote it, as long as arch and classes agree (a single-gpu checkpoint resumes
    as two-gpu and back). ``overwrite``: replace the run an existing ``out`` holds (refused otherwise).
    """
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from alexnet_cli.training.callbacks import BestMetrics, DataPosition, MemoryMeter, ThroughputMeter, WriteOnTrainStart
    from alexnet_cli.training.checkpoint_io import remove_unfinished
    from alexnet_cli.training.module import AlexNetModule
    from alexnet_cli.training.preemption import GracefulStop, StopNow, trainer_is_rank_zero

    _quiet_lightning(quiet)
    _report_lost_ranks()
    if isinstance(recipe, str):
        recipe = load_recipe(recipe, overrides)
    data = Path(data)
    setup = prepare_run(recipe, data, out=out, resume=resume, overwrite=overwrite)
    check_gpu_present(recipe)  # not in prepare_run: a dry run on a login node checks a GPU recipe too
    checkpoint, run_dir, datamodule, changes = setup.checkpoint, setup.run_dir, setup.datamodule, setup.changes
    module = AlexNetModule(setup.model, recipe.optim, num_classes=setup.num_classes, meta=setup.meta,
                           batch_size=recipe.data.batch_size)
    rank_zero = trainer_is_rank_zero()
    if changes and rank_zero:
        print(f"resuming {checkpoint} with recipe changes: " + "; ".join(changes), file=sys.stderr, flush=True)

    checkpoints = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero:
        if setup.replaces_run:
            remove_run_files(run_dir)
        remove_unfinished(checkpoints)
    recipe_text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    if checkpoint is None:
        write_text_atomic(run_dir / "recipe.yaml", recipe_text)
    earlier = _read_run_facts(run_dir) if checkpoint is not None else {}  # a resumed run adds up its segments
    facts = {"recipe": recipe.name, "num_classes": setup.num_classes,
             "train_images": len(datamodule.split("train")), "finished": False,
             "seconds": float(earlier.get("seconds", 0.0))}
    if rank_zero:
        _write_run_facts(run_dir, facts)
    throughput, best = ThroughputMeter(), BestMetrics()
    stop = GracefulStop(checkpoints / "last.ckpt", every_n_steps=int(recipe.trainer.get("log_every_n_steps", 50)))
    callbacks = [throughput, best, MemoryMeter(), DataPosition(datamodule), stop]
    if checkpoint is not None:  # a resume that fails to load keeps the run's recipe.yaml as it was
        callbacks.append(WriteOnTrainStart(run_dir / "recipe.yaml", recipe_text))
    arguments = trainer_arguments(recipe, run_dir, quiet, callbacks)
    if checkpoint is not None:
        _keep_previous_metrics(arguments["logger"], run_dir)
    trainer = L.Trainer(**arguments)
    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None,
                    weights_only=True)
    except SIGTERMException:
        raise TrainingStopped(
            f"{stop.signal_name} received: saved {checkpoints / 'last.ckpt'} at step {stop.saved_step}; resume with: "
            f"alexnet train --recipe {run_dir / 'recipe.yaml'} --data {data} --resume {run_dir}",
            exit_code=128 + int(stop.signal or signal.SIGTERM)) from None
    except StopNow:
        good = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        from alexnet_cli.models.checkpoints import read_file

        saved = (f"the newest checkpoint is {good} (step {read_file(good, mmap=True).get('global_step')}); resume "
                 f"with: alexnet train --recipe {run_dir / 'recipe.yaml'} --data {data} --resume {run_dir}"
                 if good else "no checkpoint had been saved yet")
        raise TrainingStopped(f"second Ctrl-C: stopped at once, mid-step; {saved}", exit_code=130) from None
    except TrainingStopped as exc:  # bad numbers: the checkpoints on disk are from before them
        good = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        advice = (f"resume the last good checkpoint ({good.name}) with a smaller lr: alexnet train --recipe "
                  f"{run_dir / 'recipe.yaml'} --data {data} --resume {run_dir} --set optim.lr=..."
                  if good else "start again with a smaller optim.lr")
        raise TrainingStopped(f"{exc}; {advice}", exc.exit_code) from None
    seconds = time.perf_counter() - started
    if rank_zero:
        _write_run_facts(run_dir, {**facts, "finished": True, "seconds": facts["seconds"] + seconds,
                                   "global_step": trainer.global_step,
                                   "images_per_second": throughput.images_per_second})
    return TrainResult(
        run_dir=run_dir, best_top1=best.top1, best_top5=best.top5, best_epoch=best.epoch,
        seconds=seconds, images_per_second=throughput.images_per_second,
        data_wait_fraction=throughput.data_wait_fraction, global_step=trainer.global_step,
        last_checkpoint=_existing(checkpoints / "last.ckpt"), best_checkpoint=_existing(checkpoints / "best.ckpt"),
        recipe_changes=changes,
    )


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


def prepare_run(recipe: Recipe, data: Path, *, out: Path | None = None, resume: Path | None = None,
                overwrite: bool = False) -> RunSetup:
    """Resolve the resume, the run directory, the data and the network, and check them against each other
    and against the Trainer arguments, without writing anything: ``train`` and ``train --dry-run`` both
    start here, so a dry run refuses what the run would."""
    import lightning as L

    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.data.sampling import ShardPlan
    from alexnet_cli.training.dryrun import data_parallel_size

    checkpoint = None
    if resume is not None:
        checkpoint, resumed_dir = resolve_resume(resume)
        out = out if out is not None else resumed_dir
    run_dir = Path(out) if out is not None else default_run_dir(recipe)
    replaces_run = check_run_dir(run_dir, overwrite) if checkpoint is None else False
    crop = crop_size(recipe)
    datamodule = DaliDataModule(data, recipe.data, crop=crop, seed=recipe.seed)
    num_classes = recipe.model.num_classes or datamodule.num_classes
    if num_classes != datamodule.num_classes:
        raise AlexnetError(f"model.num_classes is {num_classes} but {data} has {datamodule.num_classes} classes")
    ShardPlan(len(datamodule.split("train")), recipe.data.batch_size, 0, data_parallel_size(recipe))
    trainer_arguments(recipe, run_dir, True, [])  # its own checks: checkpoint keys, logger, strategy
    L.seed_everything(recipe.seed, workers=False, verbose=False)  # the weights are a function of the seed
    model = recipe_model(recipe, num_classes)
    meta = checkpoint_meta(recipe, datamodule, num_classes, crop)
    changes = check_resumable(checkpoint, recipe, datamodule.classes) if checkpoint is not None else []
    return RunSetup(checkpoint, run_dir, crop, datamodule, num_classes, model, meta, changes, replaces_run)


def check_gpu_present(recipe: Recipe) -> None:
    import torch

    if torch.cuda.is_available():
        return
    accelerator = str(recipe.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        raise AlexnetError(f"trainer.accelerator={accelerator}: this machine has no CUDA GPU; train on its CPU with "
                           "--set trainer.accelerator=cpu --set data.device=cpu (or --recipe cpu-demo)")
    if recipe.data.device == "gpu":
        raise AlexnetError("data.device=gpu: this machine has no CUDA GPU for DALI to decode on; use "
                           "--set data.device=cpu")


# What a run writes at its top level; --overwrite removes these and the checkpoints, nothing else.
_RUN_FILES = ("metrics.csv", "run.json", "eval.json", "recipe.yaml", "hparams.yaml")


def check_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Refuse to start a new run where one already is (it would replace its checkpoints and metrics);
    True when ``overwrite`` lets it. A folder with no checkpoint yet (a job requeued before its
    first save) holds nothing to lose."""
    if run_dir.exists() and not run_dir.is_dir():
        raise AlexnetError(f"--out {run_dir} is a file: name a folder for the run")
    held = min((run_dir / "checkpoints").glob("*.ckpt"), default=None)
    if held is None:
        return False
    if not overwrite:
        raise AlexnetError(f"--out {run_dir} already holds a run ({held}): continue it with --resume {run_dir}, "
                           "choose another --out, or add --overwrite to replace it")
    return True


def remove_run_files(run_dir: Path) -> None:
    """--overwrite: the earlier run's checkpoints and records (and only those) go before the new run starts."""
    import shutil

    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _read_run_facts(run_dir: Path) -> dict:
    import json

    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_run_facts(run_dir: Path, facts: dict) -> None:
    """RUN_DIR/run.json: what 'alexnet report' needs beside metrics.csv (finished or not, wall time, data)."""
    import json

    write_text_atomic(run_dir / "run.json", json.dumps(facts, indent=1) + "\n")


def recipe_model(recipe: Recipe, num_classes: int):
    """The recipe's network, initialised from the global torch generator."""
    from alexnet_cli.models import build_model

    return build_model(recipe.model.arch, num_classes, recipe.model.dropout, init=recipe.model.init,
                       fc_width=recipe.model.fc_width, lrn=recipe.model.lrn, overlap_pool=recipe.model.overlap_pool)


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
        "lrn": recipe.model.lrn, "overlap_pool": recipe.model.overlap_pool,
        "resize_size": recipe.data.resize_size,
        "classes": [{"index": c.index, "wnid": c.wnid, "words": c.words} for c in datamodule.classes],
        "recipe": recipe.to_dict(), "normalization": normalization,
    }


def trainer_arguments(recipe: Recipe, run_dir: Path, quiet: bool, extra_callbacks: list) -> dict[str, Any]:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from alexnet_cli.training.callbacks import FilterImageLogger, SparseMetricsProgressBar, StopOnNonFiniteLoss, TimedCheckpoint
    from alexnet_cli.training.checkpoint_io import AtomicCheckpointIO

    args = dict(recipe.trainer)
    logger_name = args.pop("logger", "csv")
    validating = args.get("limit_val_batches", 1) != 0
    checkpoint_dir = run_dir / "checkpoints"
    every_n_steps, every_minutes = recipe.checkpoint.every_n_train_steps, recipe.checkpoint.every_minutes
    if every_n_steps and every_minutes:
        raise AlexnetError("checkpoint.every_n_train_steps and checkpoint.every_minutes: set one of them")
    # Lightning syncs with the GPU to log every log_every_n_steps steps; what reads device values goes there too.
    sync_every = int(args.get("log_every_n_steps", 50))
    callbacks = [
        *extra_callbacks,
        StopOnNonFiniteLoss(every_n_steps=sync_every),
        # last.ckpt at the end of every epoch...
        ModelCheckpoint(dirpath=checkpoint_dir, filename="last", every_n_epochs=1, save_top_k=1,
                        enable_version_counter=False),
        LearningRateMonitor(logging_interval="epoch"),
        FilterImageLogger(),
    ]
    if validating:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val/top1", mode="max",
                                         save_top_k=1, enable_version_counter=False))
    if every_n_steps or every_minutes:
        # ...and every N steps or M minutes, beside step-N.ckpt copies, the newest keep_last of them.
        step_copies = dict(dirpath=checkpoint_dir, filename="step-{step:08d}", auto_insert_metric_name=False,
                           save_top_k=recipe.checkpoint.keep_last, monitor="step", mode="max", save_last=True,
                           enable_version_counter=False)
        if every_minutes:
            callbacks.append(TimedCheckpoint(train_time_interval=timedelta(minutes=every_minutes),
                                             check_every_n_steps=sync_every, **step_copies))
        else:
            callbacks.append(ModelCheckpoint(every_n_train_steps=every_n_steps, **step_copies))
    if not quiet:
        callbacks.append(SparseMetricsProgressBar(metrics_every_n_steps=sync_every))
    if args.get("strategy") == "towers":
        from alexnet_cli.parallel.strategy import TowerParallelStrategy

        args["strategy"] = TowerParallelStrategy()
    elif args.get("strategy") == "weird-trick":
        from alexnet_cli.parallel.strategy import WeirdTrickStrategy

        args["strategy"] = WeirdTrickStrategy()
    args.setdefault("num_sanity_val_steps", 0)
    args.update(
        default_root_dir=str(run_dir), logger=make_logger(logger_name, run_dir), callbacks=callbacks,
        enable_progress_bar=not quiet, enable_model_summary=not quiet, use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
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
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")  # it is: DataPosition
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # ours are reduced by hand or rank 0's
    if quiet:
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


class _LostRankReporter(logging.Handler):
    """Lightning's launcher SIGKILLs rank 0 within seconds of another rank dying, often before rank 0
    reaches a collective and fails with an error of its own: say in one line why the run ends."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "terminated with code" in message:
            detail = message.split("Forcefully")[0].strip().rstrip(".")
            sys.stderr.write(f"error: another training process stopped, so this one cannot go on ({detail}); "
                             "resume with --resume RUN_DIR\n")
            sys.stderr.flush()


def _report_lost_ranks() -> None:
    launcher_log = logging.getLogger("lightning.fabric.strategies.launchers.subprocess_script")
    if not any(isinstance(handler, _LostRankReporter) for handler in launcher_log.handlers):
        launcher_log.addHandler(_LostRankReporter(level=logging.INFO))
        launcher_log.setLevel(logging.INFO)  # its message is INFO; --quiet must not hide it
        launcher_log.propagate = False  # ours replaces Lightning's line


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
