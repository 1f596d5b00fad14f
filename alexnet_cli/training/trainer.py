"""The Trainer's arguments for a run plan (callbacks, checkpoints, logger, strategy): ``train`` and
``benchmark train`` both build their Trainer from here. What they would refuse is asked first, without
building anything, by ``plan.plan_run`` (``plan.check_trainer_arguments``)."""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.recipes import CheckpointConfig
from alexnet_cli.training.callbacks import (
    FilterImageLogger,
    SaveWhenTrainingEnds,
    SparseMetricsProgressBar,
    StopOnNonFiniteLoss,
    TimedCheckpoint,
)
from alexnet_cli.training.checkpoint_io import AtomicCheckpointIO
from alexnet_cli.training.cuda_stream import TrainingStream
from alexnet_cli.training.plan import RunPlan, check_checkpoint_schedule, check_logger
from alexnet_cli.training.resume_repair import ResumeRepair


def trainer_arguments(plan: RunPlan, run_dir: Path, quiet: bool, extra_callbacks: list,
                      say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``lightning.Trainer``'s arguments for ``plan``'s run in ``run_dir``; ``say`` hears what the run says
    as it goes (a resume's re-planned schedule)."""
    trainer = plan.recipe.trainer
    args = trainer.lightning_arguments()
    validating = trainer.limit_val_batches != 0
    # Lightning syncs with the GPU to log every log_every_n_steps steps; what reads device values goes there too.
    sync_every = int(trainer.log_every_n_steps)
    # TrainingStream first: everything after it queues its work on the training stream (a no-op off CUDA).
    callbacks = [TrainingStream(), *extra_callbacks, StopOnNonFiniteLoss(every_n_steps=sync_every),
                 *checkpoint_callbacks(plan.recipe.checkpoint, run_dir / "checkpoints", validating, sync_every),
                 LearningRateMonitor(logging_interval="epoch"), FilterImageLogger()]
    if not quiet:
        callbacks.append(SparseMetricsProgressBar(metrics_every_n_steps=sync_every))
    # After the tool's other callbacks, as the module's own hooks were: a resume's plateau catch-up at an
    # epoch's end follows what they do there, and precedes Lightning's savers (it runs them last).
    callbacks.append(ResumeRepair(say))
    timeout = timedelta(seconds=trainer.collective_timeout_s) if plan.devices > 1 else None
    args["strategy"] = plan.layout.lightning_strategy(timeout)
    args.setdefault("num_sanity_val_steps", 0)
    args.update(
        default_root_dir=str(run_dir), logger=make_logger(trainer.logger, run_dir), callbacks=callbacks,
        enable_progress_bar=not quiet, use_distributed_sampler=False,
        enable_model_summary=False,  # its FLOPs column reads 0 without an example input; run() names the network
        plugins=[AtomicCheckpointIO()],
        # Lightning adds a saver of its own (epoch=N-step=M.ckpt) to a Trainer given none
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    return args


def checkpoint_callbacks(config: CheckpointConfig, checkpoint_dir: Path, validating: bool, sync_every: int) -> list:
    """The savers the recipe's ``checkpoint`` section asks for."""
    check_checkpoint_schedule(config)
    # last.ckpt every N epochs, or once when training ends...
    savers = [ModelCheckpoint(dirpath=checkpoint_dir, filename="last", every_n_epochs=config.every_n_epochs,
                              save_top_k=1, enable_version_counter=False)
              if config.every_n_epochs else SaveWhenTrainingEnds(checkpoint_dir / "last.ckpt")]
    if validating and config.best:
        savers.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor="val/top1", mode="max",
                                      save_top_k=1, enable_version_counter=False))
    if config.every_n_train_steps or config.every_minutes:
        # ...and every N steps or M minutes, beside step-N.ckpt copies, the newest keep_last of them.
        step_copies = dict(dirpath=checkpoint_dir, filename="step-{step:08d}", auto_insert_metric_name=False,
                           save_top_k=config.keep_last, monitor="step", mode="max", save_last=True,
                           enable_version_counter=False)
        if config.every_minutes:
            savers.append(TimedCheckpoint(train_time_interval=timedelta(minutes=config.every_minutes),
                                          check_every_n_steps=sync_every, **step_copies))
        else:
            savers.append(ModelCheckpoint(every_n_train_steps=config.every_n_train_steps, **step_copies))
    return savers


def make_logger(name: str | None, run_dir: Path):
    """CSV always, and TensorBoard or W&B beside it if asked (``check_logger``)."""
    check_logger(name)
    csv = CSVLogger(save_dir=str(run_dir), name="", version="")
    if name in (None, "csv"):
        return csv
    if name == "tensorboard":
        return [csv, TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard")]
    return [csv, WandbLogger(save_dir=str(run_dir))]  # check_logger let nothing else through


def keep_previous_metrics(loggers, run_dir: Path) -> None:
    """A resumed run appends to metrics.csv (Lightning's CSV writer would start it afresh)."""
    path = run_dir / "metrics.csv"
    csv_logger = next(lg for lg in (loggers if isinstance(loggers, list) else [loggers]) if isinstance(lg, CSVLogger))
    if not path.is_file():
        return
    previous = path.read_text()
    writer = csv_logger.experiment  # creating the writer deletes metrics.csv on rank 0
    if hasattr(writer, "metrics_keys"):
        write_text_atomic(path, previous)
        writer.metrics_keys = previous.splitlines()[0].split(",") if previous else []
