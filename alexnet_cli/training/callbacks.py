"""Lightning callbacks of the tool: throughput and data-wait measurement, best-metric tracking, and
the stop, progress and checkpoint callbacks that read device values only when the loop syncs anyway."""

import os
import resource
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.errors import TrainingStopped
from alexnet_cli.models.kernel_grid import conv_weights, filter_grid, tower_blocks
from alexnet_cli.parallel.ranks import data_parallel_shard
from alexnet_cli.training.run_dir import write_run_facts


class StepGaps:
    """Data wait: the time from the end of one training step to the start of the next, which is where
    the loop blocks on the loader (as NVIDIA's DeepLearningExamples report it). ``ThroughputMeter`` and
    ``benchmark train`` both measure it with this."""

    def __init__(self) -> None:
        self.wait = 0.0
        self._last_end: float | None = None

    def restart(self) -> None:
        """The next step's wait counts from now (an epoch's start)."""
        self._last_end = time.perf_counter()

    def step_started(self, counting: bool = True) -> float:
        now = time.perf_counter()
        if counting and self._last_end is not None:
            self.wait += now - self._last_end
        return now

    def step_ended(self) -> float:
        self._last_end = time.perf_counter()
        return self._last_end


class ThroughputMeter(L.Callback):
    """Images/s of training and the fraction of time spent waiting for data.

    Data wait: ``StepGaps``.
    """

    def __init__(self) -> None:
        self.images = 0
        self.busy = 0.0
        self.wait = 0.0
        self._epoch_images = 0
        self._epoch_busy = 0.0
        self._gaps = StepGaps()
        self._batch_start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_images, self._epoch_busy = 0, 0.0
        self._gaps = StepGaps()
        self._gaps.restart()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = self._gaps.step_started()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch_busy += self._gaps.step_ended() - self._batch_start
        self._epoch_images += len(batch[1]) * data_parallel_shard(trainer)[1]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch_wait = self._gaps.wait
        total = self._epoch_busy + epoch_wait
        self.images += self._epoch_images
        self.busy += self._epoch_busy
        self.wait += epoch_wait
        if total > 0:
            pl_module.log("train/img_per_s", self._epoch_images / total)
            pl_module.log("train/data_wait_frac", epoch_wait / total)

    @property
    def images_per_second(self) -> float:
        total = self.busy + self.wait
        return self.images / total if total else 0.0

    @property
    def data_wait_fraction(self) -> float:
        total = self.busy + self.wait
        return self.wait / total if total else 0.0


class FirstStepTimer(L.Callback):
    """The first training step's seconds, device work included: with ``model.compile`` that is when the
    network is traced and compiled, which takes tens of seconds a user should hear about once."""

    def __init__(self) -> None:
        self.seconds: float | None = None
        self._started: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seconds is None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)  # once: the compiled step must have run
            self.seconds = time.perf_counter() - self._started


class MemoryMeter(L.Callback):
    """Logs the process's resident memory (and the GPU's) at each epoch's end: a leak shows as a slope."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("sys/rss_mb", resident_megabytes(), rank_zero_only=True)
        if pl_module.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(pl_module.device)  # DALI's buffers too, not only torch's
            pl_module.log("sys/gpu_used_mb", (total - free) / 2**20, rank_zero_only=True)
            pl_module.log("sys/torch_allocated_mb", torch.cuda.memory_allocated(pl_module.device) / 2**20,
                          rank_zero_only=True)


def resident_megabytes() -> float:
    """Current resident set size of this process (peak size where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DataPosition(L.Callback):
    """Which batch the training data continues from, saved in every checkpoint.

    Counted here, at the end of each trained batch, rather than read back from Lightning's
    loop counters, whose meaning depends on the hook that saved the checkpoint. On load it
    tells the datamodule where the resumed run's first batch is.
    """

    def __init__(self, datamodule) -> None:
        self.datamodule = datamodule
        self.epoch, self.step = 0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = batch_idx + 1
        if done >= trainer.num_training_batches:
            self.epoch, self.step = trainer.current_epoch + 1, 0
        else:
            self.epoch, self.step = trainer.current_epoch, done

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch, self.step = int(state_dict["epoch"]), int(state_dict["step"])
        self.datamodule.resume_at(self.epoch, self.step)


class BestMetrics(L.Callback):
    """Remembers the epoch with the best val/top1 and its top-5."""

    def __init__(self) -> None:
        self.top1: float | None = None
        self.top5: float | None = None
        self.epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if "val/top1" not in metrics:
            return
        top1 = float(metrics["val/top1"])
        if self.top1 is None or top1 > self.top1:
            # the epoch as people count it (the first is 1), as the report's curves do; metrics.csv keeps
            # Lightning's own count from 0
            self.top1, self.top5, self.epoch = top1, float(metrics["val/top5"]), trainer.current_epoch + 1


class FilterImageLogger(L.Callback):
    """At each epoch's end, conv1's kernels as an image for TensorBoard or W&B: Figure 3 as it forms."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        image_loggers = [lg for lg in trainer.loggers if isinstance(lg, (TensorBoardLogger, WandbLogger))]
        if not image_loggers or trainer.global_rank != 0:
            return
        weights = conv_weights(pl_module.model, "conv1")
        canvas, _ = filter_grid(weights, scale=3, groups=tower_blocks("conv1", weights))
        for logger in image_loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("conv1_filters", canvas, trainer.current_epoch, dataformats="HWC")
            else:
                logger.log_image("conv1_filters", [canvas], step=trainer.global_step)


class StopOnNonFiniteLoss(L.Callback):
    """Ends the run at the first NaN/inf loss or gradient, naming its step, with exit code 1.

    The module records that step on the device and the optimizer skips its update there
    (``AlexNetModule.on_before_optimizer_step``), so nothing has to wait for the GPU each step:
    the record is read every ``every_n_steps`` steps (the steps Lightning logs at, when it
    syncs anyway) and at each epoch's end. Runs before the checkpoint callbacks (Lightning
    orders those last), so the checkpoint of the stopping step is never written.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = max(1, every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.check(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(pl_module)

    @staticmethod
    def check(pl_module) -> None:
        step = pl_module.first_nonfinite_step
        if step is not None and int(step) >= 0:
            raise TrainingStopped(f"train/loss is {float(pl_module.first_nonfinite_loss)} at step {int(step)} (the "
                                  "weights were not updated with it)", exit_code=1)


class SparseMetricsProgressBar(RichProgressBar):
    """Lightning's rich bar, which reads the logged loss on every batch: a device→host copy that makes
    the CPU wait for the GPU each step. This one reads the metrics every ``metrics_every_n_steps``
    steps and shows the last values in between; the bar itself still moves every batch."""

    def __init__(self, metrics_every_n_steps: int = 1) -> None:
        super().__init__(refresh_rate=1, leave=True)
        self.metrics_every_n_steps = max(1, metrics_every_n_steps)
        self._shown: dict = {}

    def _get_train_description(self, current_epoch: int) -> str:
        """"Epoch 1/8" for the first of eight, as the run's summary and the report count them (Lightning's own
        bar says "Epoch 0/7"). Lightning's protected hook, the only place the bar's description is made:
        tests/training/test_callbacks.py fails if a Lightning release renames it."""
        description = f"Epoch {current_epoch + 1}" + (f"/{self.trainer.max_epochs}" if self.trainer.max_epochs
                                                      and self.trainer.max_epochs > 0 else "")
        return f"{description:{len(self.validation_description)}}"

    def get_metrics(self, trainer, pl_module) -> dict:
        if trainer.training and self._shown and trainer.global_step % self.metrics_every_n_steps:
            return self._shown
        self._shown = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            self._shown["train/loss"] = float(loss)
        return self._shown


class TimedCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(train_time_interval=...)`` broadcasts rank 0's clock on every batch (one
    collective and one host sync per step under DDP). This one looks at the clock every
    ``check_every_n_steps`` steps, the same steps on every rank, so no rank can wait for another."""

    def __init__(self, *args, check_every_n_steps: int = 50, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.check_every_n_steps = max(1, check_every_n_steps)

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step % self.check_every_n_steps == 0:
            super().on_train_batch_end(trainer, *args, **kwargs)


class WriteOnTrainStart(L.Callback):
    """Write a file once training starts, after the checkpoint has loaded: a resume that fails
    leaves the run's recipe.yaml as it was."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            write_text_atomic(self.path, self.text)


class RunRecord(L.Callback):
    """run.json (unfinished) when training starts, and whether it did: a resume that fails to load leaves the
    run's record as it was, and only a run that trained writes its time and step when it stops."""

    def __init__(self, run_dir: Path, facts: dict) -> None:
        self.run_dir, self.facts, self.started = Path(run_dir), facts, False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True
        if trainer.is_global_zero:
            write_run_facts(self.run_dir, self.facts)


class SaveWhenTrainingEnds(L.Callback):
    """last.ckpt once, when training reaches its end (``checkpoint.every_n_epochs: null``): for runs so
    short that a crash costs less than writing a checkpoint every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module) -> None:
        # the full state (optimizer, loops) a resume needs; unset, Lightning says "`weights_only` was not set"
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; the strategy writes once
