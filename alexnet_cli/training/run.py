"""``alexnet train``: recipe → (datamodule, model, LightningModule) → Trainer → run directory.

    RUN_DIR/recipe.yaml                the resolved recipe
    RUN_DIR/metrics.csv                every logged metric (CSVLogger)
    RUN_DIR/checkpoints/last.ckpt      the latest state (each epoch, every N steps, on SIGTERM): resume from it
    RUN_DIR/checkpoints/best.ckpt      the best val/top1 so far
    RUN_DIR/checkpoints/step-N.ckpt    with checkpoint.every_n_train_steps: the newest keep_last of them

Every checkpoint is written to a hidden temporary name and renamed into place.
"""

import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from alexnet_cli.errors import TrainingStopped
from alexnet_cli.models.checkpoints import read_file
from alexnet_cli.models.execution import split_groups_note
from alexnet_cli.parallel.ranks import launch_rank
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import Recipe
from alexnet_cli.terminal import shown
from alexnet_cli.training.callbacks import (
    BestMetrics,
    DataPosition,
    FirstStepTimer,
    MemoryMeter,
    RunRecord,
    ThroughputMeter,
    WriteOnTrainStart,
)
from alexnet_cli.training.lightning_output import quiet_lightning, report_lost_ranks
from alexnet_cli.training.module import AlexNetModule
from alexnet_cli.training.preemption import GracefulStop, StopNow
from alexnet_cli.training.resume import latest_checkpoint, limit_reached
from alexnet_cli.training.run_dir import run_lock, start_run_directory, write_run_facts
from alexnet_cli.training.setup import RunSetup, check_gpu_present, prepare_run
from alexnet_cli.training.trainer import keep_previous_metrics, trainer_arguments


@dataclass
class TrainResult:
    run_dir: Path
    best_top1: float | None
    best_top5: float | None
    best_epoch: int | None  # counted from 1, as the report's curves count
    seconds: float
    images_per_second: float
    data_wait_fraction: float
    global_step: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    recipe_changes: list[str]  # on resume: the recipe keys that differ from the checkpoint's
    already_done: str | None = None  # on resume: the limit (trainer.max_epochs=N) the checkpoint had reached
    compile_seconds: float | None = None  # model.compile: the first step's seconds, which include compiling


def run(recipe: Recipe, data: Path, *, out: Path | None = None, quiet: bool = False, resume: Path | None = None,
        overwrite: bool = False, progress: Progress | None = None) -> TrainResult:
    """Train a recipe (``recipes.load_recipe``'s) on a prepared dataset; returns where everything went and the
    best metrics.

    ``resume``: a checkpoint (or a run directory's last.ckpt) to continue from, whatever
    recipe wrote it, as long as arch and classes agree (a single-gpu checkpoint resumes
    as two-gpu and back). ``overwrite``: replace the run an existing ``out`` holds (refused otherwise).
    ``progress`` hears what the run says before it starts (the network unless ``quiet``; a resume's
    recipe changes always).
    """
    with ExitStack() as held:
        return _run(recipe, data, out=out, quiet=quiet, resume=resume, overwrite=overwrite, progress=progress,
                    held=held)


def _run(recipe: Recipe, data: Path, *, out: Path | None, quiet: bool, resume: Path | None, overwrite: bool,
         progress: Progress | None, held: ExitStack) -> TrainResult:
    """``run``; what enters ``held`` (the run folder's lock) is released when it returns or raises."""
    progress = progress or SilentProgress()
    quiet_lightning(quiet)
    report_lost_ranks()
    data = Path(data)
    setup = prepare_run(recipe, data, out=out, resume=resume, overwrite=overwrite)
    plan = setup.plan
    if setup.resumes is not None and (reached := limit_reached(setup.resumes, recipe)):
        return _already_done(setup, reached)  # before anything is written: run.json keeps the run's figures
    check_gpu_present(plan)  # not in prepare_run: a dry run on a login node checks a GPU recipe too
    module = AlexNetModule(setup.model, recipe.optim, num_classes=plan.num_classes, meta=setup.meta,
                           batch_size=plan.batch_size, compile=plan.compile, say=progress.note)
    rank_zero = launch_rank(plan.devices_per_node) == 0
    if rank_zero:  # run() executes in every rank; rank 0 holds the lock for them all
        held.enter_context(run_lock(setup.run_dir))
        _announce(setup, progress, quiet)
    recipe_text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    resumed = (setup.resumed_dir, setup.resumes.step) if setup.resumes is not None else None
    facts = start_run_directory(setup.run_dir, {"recipe": recipe.name, "num_classes": plan.num_classes,
                                                "train_images": plan.train_images}, recipe_text=recipe_text,
                                resumed=resumed, in_place=setup.continues_in_place, replaces_run=setup.replaces_run,
                                rank_zero=rank_zero,
                                say=progress.note)
    throughput, best = ThroughputMeter(), BestMetrics()
    first_step = FirstStepTimer() if recipe.model.compile else None  # timed only where it compiles
    stop = GracefulStop(setup.run_dir / "checkpoints" / "last.ckpt",
                        every_n_steps=int(recipe.trainer.log_every_n_steps))
    record = RunRecord(setup.run_dir, facts)  # run.json once training starts: a resume that fails keeps the old
    meters = [throughput, best, record] + ([first_step] if first_step is not None else [])
    trainer = _trainer(setup, recipe_text, quiet, meters, stop, progress.note)
    started = time.perf_counter()
    finished = False
    try:
        _fit(trainer, module, setup, data, stop)
        finished = True
    finally:  # a stopped or failed run keeps its wall time and step for the resume that adds to them
        seconds = time.perf_counter() - started
        compile_seconds = first_step.seconds if first_step is not None else None
        if rank_zero and record.started:
            compiled = {"compile_seconds": compile_seconds} if first_step is not None else {}
            write_run_facts(setup.run_dir, {**facts, "finished": finished, "seconds": facts["seconds"] + seconds,
                                            "global_step": trainer.global_step,
                                            "images_per_second": throughput.images_per_second, **compiled})
    run_dir, checkpoints = setup.run_dir, setup.run_dir / "checkpoints"
    return TrainResult(
        run_dir=run_dir, best_top1=best.top1, best_top5=best.top5, best_epoch=best.epoch,
        seconds=seconds, images_per_second=throughput.images_per_second,
        data_wait_fraction=throughput.data_wait_fraction, global_step=trainer.global_step,
        last_checkpoint=_existing(checkpoints / "last.ckpt"), best_checkpoint=_existing(checkpoints / "best.ckpt"),
        recipe_changes=setup.changes, compile_seconds=compile_seconds,
    )


def _already_done(setup: RunSetup, reached: str) -> TrainResult:
    checkpoints = setup.run_dir / "checkpoints"
    return TrainResult(
        run_dir=setup.run_dir, best_top1=None, best_top5=None, best_epoch=None, seconds=0.0, images_per_second=0.0,
        data_wait_fraction=0.0, global_step=setup.resumes.step,
        last_checkpoint=_existing(checkpoints / "last.ckpt"), best_checkpoint=_existing(checkpoints / "best.ckpt"),
        recipe_changes=setup.changes, already_done=reached,
    )


def _trainer(setup: RunSetup, recipe_text: str, quiet: bool, meters: list, stop, say) -> L.Trainer:
    # GracefulStop last: the position it saves on a signal is the one DataPosition has just advanced
    callbacks = [*meters, MemoryMeter(), DataPosition(setup.datamodule), stop]
    if setup.checkpoint is not None:  # a resume that fails to load keeps the run's recipe.yaml as it was
        callbacks.append(WriteOnTrainStart(setup.run_dir / "recipe.yaml", recipe_text))
    arguments = trainer_arguments(setup.plan, setup.run_dir, quiet, callbacks, say)
    if setup.checkpoint is not None:
        keep_previous_metrics(arguments["logger"], setup.run_dir)
    return L.Trainer(**arguments)


def _announce(setup: RunSetup, progress: Progress, quiet: bool) -> None:
    """The network (instead of Lightning's summary table), unless quiet; a resume's recipe changes, always."""
    plan, recipe = setup.plan, setup.plan.recipe
    if not quiet:
        parameters = sum(p.numel() for p in setup.model.parameters())
        progress.note(f"{recipe.model.arch}: {parameters:,} parameters, {plan.crop}×{plan.crop} crops, "
                      f"{plan.num_classes} classes → {shown(setup.run_dir)}")
        if recipe.model.compile:
            progress.note(f"model.compile: the first step compiles the network ({recipe.model.compile_backend}, "
                          f"mode {recipe.model.compile_mode}) and takes longer")
    if recipe.model.split_groups and (note := split_groups_note(setup.model, recipe.model.arch)):
        progress.note(note)
    if setup.changes:
        progress.note(shown(f"resuming {setup.checkpoint} with recipe changes: " + "; ".join(setup.changes)))


def _fit(trainer, module, setup: RunSetup, data: Path, stop) -> None:
    """trainer.fit, with each way a run can stop early told as one ``TrainingStopped`` that says how to resume."""
    run_dir, checkpoints = setup.run_dir, setup.run_dir / "checkpoints"
    resume_with = f"alexnet train --data {data} --resume {run_dir}"
    try:
        trainer.fit(module, datamodule=setup.datamodule, weights_only=True,
                    ckpt_path=str(setup.checkpoint) if setup.checkpoint else None)
    except SIGTERMException:
        raise TrainingStopped(
            f"{stop.signal_name} received: saved {checkpoints / 'last.ckpt'} at step {stop.saved_step}; resume with: "
            f"{resume_with}", exit_code=128 + int(stop.signal or signal.SIGTERM)) from None
    except StopNow:
        good = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        saved = (f"the newest checkpoint is {good} (step {read_file(good, mmap=True).get('global_step')}); resume "
                 f"with: {resume_with}" if good else "no checkpoint had been saved yet")
        raise TrainingStopped(f"second Ctrl-C: stopped at once, mid-step; {saved}", exit_code=130) from None
    except TrainingStopped as exc:  # bad numbers: the checkpoints on disk are from before them
        good = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        advice = (f"resume the last good checkpoint ({good.name}) with a smaller lr: {resume_with} --set optim.lr=..."
                  if good else "start again with a smaller optim.lr")
        raise TrainingStopped(f"{exc}; {advice}", exc.exit_code) from None


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
