"""``alexnet benchmark train``: the Lightning training step of a recipe against a plain PyTorch loop
doing the same work (same model, optimizer, precision and batches) in the same run.

Both sides are timed over the same window: ``steps`` optimizer steps after ``warmup``
untimed ones, from the end of the last warm-up step to the end of the last step, with
the device synchronised at both ends. Data wait is the time the loop blocked on the
loader between steps (NVIDIA's DeepLearningExamples report it the same way).
"""

import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from alexnet_cli.bench.speed import amp_training_step, synchronize
from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.devices import require_gpu, torch_device
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.build import build_network
from alexnet_cli.models.execution import compile_in_place
from alexnet_cli.parallel.layouts import layout_named
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import Recipe
from alexnet_cli.training.callbacks import SaveWhenTrainingEnds, StepGaps, ThroughputMeter
from alexnet_cli.training.cuda_stream import own_stream
from alexnet_cli.training.lightning_output import quiet_lightning
from alexnet_cli.training.module import AlexNetModule
from alexnet_cli.training.optimizer import sgd
from alexnet_cli.training.plan import RunPlan, plan_run
from alexnet_cli.training.trainer import trainer_arguments


@dataclass
class TrainBenchmark:
    recipe: str
    batch_size: int
    device: str
    precision: str
    steps: int
    warmup: int
    synthetic: bool
    lightning_img_s: float
    plain_img_s: float
    overhead_pct: float  # 100 × (plain − lightning) / plain
    data_wait_frac: float  # of the Lightning run
    plain_data_wait_frac: float
    repeats: int = 1  # each side ran this many times, alternating; the figures above are medians
    plain_img_s_runs: list[float] = field(default_factory=list)
    lightning_img_s_runs: list[float] = field(default_factory=list)
    overhead_pct_runs: list[float] = field(default_factory=list)  # per pair of runs: the spread of overhead_pct
    synthetic_img_s: float | None = None  # Lightning on in-memory batches, beside a real-data run
    real_vs_synthetic: float | None = None  # lightning_img_s / synthetic_img_s
    lightning_syncs_per_step: float | None = None  # with count_syncs on a GPU: host waits per timed step
    plain_syncs_per_step: float | None = None
    gpu_busy_frac: float | None = None  # Lightning run, GPU only: see _Window.busy_fraction
    host_blocked_ms_per_step: float | None = None  # Lightning run on real data: the host inside DALI's run()


class SyntheticBatches:
    """The same in-memory batch ``steps`` times: the loop's speed with data costing nothing."""

    def __init__(self, batch_size: int, crop: int, num_classes: int, steps: int, device: torch.device) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch_size, 3, crop, crop, generator=generator).to(device)
        self.labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.images, self.labels


class SyncCounter:
    """Counts the operations that make the host wait for the GPU (``torch.cuda.set_sync_debug_mode``), each
    of which stalls the queue of kernels the CPU would otherwise keep ahead of the GPU."""

    def __init__(self) -> None:
        self.count = 0
        self._recording = None

    def start(self) -> None:
        self._recording = warnings.catch_warnings(record=True)
        self._caught = self._recording.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self.count = sum("synchronizing" in str(w.message) for w in self._caught)
        self._recording.__exit__(None, None, None)


class _Window:
    """Times steps ``warmup`` … ``warmup + steps - 1`` and the data wait between them, and with
    ``count_syncs`` (CUDA only) the host syncs inside that window."""

    def __init__(self, warmup: int, steps: int, device: torch.device, count_syncs: bool = False) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.done = 0
        self.started = self.ended = None
        self.gaps = StepGaps()
        self.syncs = SyncCounter() if count_syncs and device.type == "cuda" else None
        self.step_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # (start, end) per timed step
        self.loader = None  # a DaliLoader, whose host_wait_seconds the window reads at both ends
        self._host_wait = [0.0, 0.0]

    @property
    def _in_window(self) -> bool:
        return self.started is not None and self.ended is None

    def _event(self) -> "torch.cuda.Event":
        event = torch.cuda.Event(enable_timing=True)
        event.record()  # on the current stream: it fires when the GPU gets there, not when the host does
        return event

    @property
    def busy_fraction(self) -> float | None:
        """``busy_fraction`` of the timed steps' spans on the training stream (CUDA events around each step)."""
        if not self.step_events:
            return None
        torch.cuda.synchronize(self.device)
        origin = self.step_events[0][0]
        return busy_fraction([(origin.elapsed_time(start), origin.elapsed_time(end))
                              for start, end in self.step_events])

    @property
    def host_blocked_per_step(self) -> float | None:
        """Seconds per timed step the training thread spent inside the pipeline's ``run()``."""
        if self.loader is None or not hasattr(self.loader, "host_wait_seconds"):
            return None
        return (self._host_wait[1] - self._host_wait[0]) / self.steps

    def _read_host_wait(self, end: int) -> None:
        if self.loader is not None and hasattr(self.loader, "host_wait_seconds"):
            self._host_wait[end] = self.loader.host_wait_seconds

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    @property
    def wait(self) -> float:
        return self.gaps.wait

    def step_started(self) -> None:
        self.gaps.step_started(counting=self._in_window)
        if self._in_window and self.device.type == "cuda":
            self.step_events.append((self._event(), None))

    def step_ended(self) -> None:
        if self._in_window and self.step_events:
            self.step_events[-1] = (self.step_events[-1][0], self._event())
        self.done += 1
        if self.done == self.warmup:
            self.started = self._now()
            self._read_host_wait(0)
            if self.syncs:
                self.syncs.start()  # after the window's own synchronize
        elif self.done == self.warmup + self.steps:
            if self.syncs:
                self.syncs.stop()
            self.ended = self._now()
            self._read_host_wait(1)
        self.gaps.step_ended()

    @property
    def syncs_per_step(self) -> float | None:
        return None if self.syncs is None else self.syncs.count / self.steps

    @property
    def seconds(self) -> float:
        if self.started is None or self.ended is None:
            raise AlexnetError("the benchmark ended before its timed steps did (the data ran out?)")
        return self.ended - self.started


def busy_fraction(spans: list[tuple[float, float]]) -> float:
    """Of the time from the first step's start to the last step's end, the share spent inside steps, from each
    step's (start, end) on the GPU's clock. A gap between steps is the GPU waiting for the host (data, Python);
    a pause inside a step (launch-bound work) still counts as busy."""
    inside = sum(end - start for start, end in spans)
    return inside / (spans[-1][1] - spans[0][0])


class _WindowCallback(L.Callback):
    def __init__(self, window: _Window) -> None:
        self.window = window

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.window.step_started()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.window.step_ended()


class _LoaderDataModule(L.LightningDataModule):
    def __init__(self, make_loader) -> None:
        super().__init__()
        self.make_loader = make_loader

    def train_dataloader(self):
        return self.make_loader()


def benchmark_train(recipe: Recipe, data: Path | None, *, steps: int = 20, warmup: int = 5,
                    synthetic: bool = False, compare_synthetic: bool = True, repeats: int = 1,
                    progress_bar: bool = False, count_syncs: bool = False,
                    progress: Progress | None = None) -> TrainBenchmark:
    """Lightning vs plain loop on the recipe's data (or ``synthetic`` batches); img/s, overhead, data wait.

    ``progress_bar``: the Lightning side shows (and pays for) the progress bar of ``alexnet train``.
    ``count_syncs``: on a GPU, also count the host syncs per timed step of each side.
    """
    progress = progress or SilentProgress()
    plan = _single_process_plan(recipe)
    if data is None and not synthetic:
        raise AlexnetError("give --data DATASET, or --synthetic for in-memory batches")
    if steps < 1 or warmup < 1 or repeats < 1:
        raise AlexnetError("--steps, --warmup and --repeats must be at least 1")
    crop = plan.crop
    device = _torch_device(plan)
    datamodule = None
    if data is not None:
        datamodule = DaliDataModule(Path(data), recipe.data, crop=crop, seed=recipe.seed)
    num_classes = recipe.model.num_classes or (datamodule.num_classes if datamodule else 1000)
    total = warmup + steps
    batch = recipe.data.batch_size

    def loader(use_synthetic: bool):
        if use_synthetic:
            return SyntheticBatches(batch, crop, num_classes, total, device)
        return datamodule.loader("train", "train", shard=(0, 1))

    plain_runs, lightning_runs, synthetic_runs = [], [], []
    def run_plain() -> None:
        plain_loader = loader(synthetic)
        window = _Window(warmup, steps, device, count_syncs)
        window.loader = plain_loader
        plain_runs.append(_run_plain(plan, num_classes, plain_loader, window, progress))
        _close(plain_loader)

    def run_lightning() -> None:
        lightning_runs.append(_run_lightning(plan, num_classes, lambda: loader(synthetic),
                                             _Window(warmup, steps, device, count_syncs), progress_bar))

    for repeat in range(repeats):
        # Pairs, each side first in every other pair: drift on a shared machine and whatever the first run of
        # a pair pays (caches, allocator, the CPU's clock) hit both sides alike.
        for side in ((run_plain, run_lightning) if repeat % 2 == 0 else (run_lightning, run_plain)):
            side()
        if not synthetic and compare_synthetic:
            synthetic_runs.append(_run_lightning(plan, num_classes, lambda: loader(True),
                                                 _Window(warmup, steps, device), progress_bar))
    return _figures(recipe, str(device), steps, warmup, synthetic, repeats, plain_runs, lightning_runs,
                    synthetic_runs)


def _figures(recipe: Recipe, device: str, steps: int, warmup: int, synthetic: bool, repeats: int,
             plain_runs: list[_Window], lightning_runs: list[_Window], synthetic_runs: list[_Window]) -> TrainBenchmark:
    """Medians of the runs and each pair's overhead."""
    batch = recipe.data.batch_size
    plain, lightning = _median_run(plain_runs), _median_run(lightning_runs)
    lightning_img_s, plain_img_s = steps * batch / lightning.seconds, steps * batch / plain.seconds
    result = TrainBenchmark(
        recipe=recipe.name, batch_size=batch, device=device, precision=recipe.trainer.precision_name,
        steps=steps, warmup=warmup, synthetic=synthetic, lightning_img_s=lightning_img_s, plain_img_s=plain_img_s,
        overhead_pct=100.0 * (plain_img_s - lightning_img_s) / plain_img_s,
        data_wait_frac=lightning.wait / lightning.seconds, plain_data_wait_frac=plain.wait / plain.seconds,
        repeats=repeats, plain_img_s_runs=[steps * batch / run.seconds for run in plain_runs],
        lightning_img_s_runs=[steps * batch / run.seconds for run in lightning_runs],
        overhead_pct_runs=[100.0 * (ours.seconds - plain_run.seconds) / ours.seconds
                           for plain_run, ours in zip(plain_runs, lightning_runs)],
        lightning_syncs_per_step=lightning.syncs_per_step, plain_syncs_per_step=plain.syncs_per_step,
        gpu_busy_frac=lightning.busy_fraction,
        host_blocked_ms_per_step=None if lightning.host_blocked_per_step is None
        else 1e3 * lightning.host_blocked_per_step,
    )
    if synthetic_runs:
        result.synthetic_img_s = steps * batch / _median_run(synthetic_runs).seconds
        result.real_vs_synthetic = result.lightning_img_s / result.synthetic_img_s
    return result


def _median_run(runs: list[_Window]) -> _Window:
    return sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]


def _single_process_plan(recipe: Recipe) -> RunPlan:
    devices = recipe.trainer.devices
    if devices not in (1, "1", [0]) or not layout_named(recipe.trainer.strategy, 1).one_process:
        raise AlexnetError(f"recipe {recipe.name!r} runs {devices} processes; benchmark train times one: use a "
                           "single-device recipe (single-gpu, cpu-demo) or --set trainer.devices=1 "
                           "--set trainer.strategy=auto")
    return plan_run(recipe)


def _torch_device(plan: RunPlan) -> torch.device:
    if not plan.on_gpu:
        return torch_device("cpu")
    require_gpu(f"recipe {plan.recipe.name!r} (trainer.accelerator={plan.recipe.trainer.accelerator})",
                "use --set trainer.accelerator=cpu --set data.device=cpu")
    return torch_device("gpu")


def _build(recipe: Recipe, num_classes: int):
    torch.manual_seed(recipe.seed)  # both sides start from the same weights
    return build_network(recipe.model, num_classes)


def _run_plain(plan: RunPlan, num_classes: int, loader, window: _Window, progress: Progress) -> _Window:
    """The loop every PyTorch tutorial writes: nothing but forward, loss, backward, step (the same
    optimizer as ``alexnet train``'s, so that the two sides differ only in what Lightning and the
    module add)."""
    recipe = plan.recipe
    device, total = window.device, window.warmup + window.steps
    torch.backends.cudnn.benchmark = bool(recipe.trainer.benchmark)  # as the Trainer sets it
    model = _build(recipe, num_classes).to(device).train()
    if plan.compile is not None:
        compile_in_place(model, plan.compile)
    optimizer = sgd(model, recipe.optim, recipe.optim.lr)
    step = amp_training_step(model, optimizer, plan.precision, device)
    # On a stream of its own, as alexnet train runs (training/cuda_stream.py): DALI's batches come ordered on it.
    with progress.task("plain PyTorch loop", total * recipe.data.batch_size) as task, own_stream(device):
        while window.done < total:
            for images, labels in loader:
                window.step_started()
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                step(images, labels)
                window.step_ended()
                task.advance(len(labels))
                if window.done == total:
                    break
    return window


def _run_lightning(plan: RunPlan, num_classes: int, make_loader, window: _Window, progress_bar: bool) -> _Window:
    """The module and Trainer settings of ``alexnet train``: metrics, logging, throughput meter, the NaN
    stop, and its progress bar if ``progress_bar``."""
    recipe = plan.recipe
    quiet_lightning(True)
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    module = AlexNetModule(_build(recipe, num_classes), recipe.optim, num_classes=num_classes, meta={},
                           batch_size=recipe.data.batch_size, compile=plan.compile)
    total = window.warmup + window.steps
    loader = make_loader()
    window.loader = loader
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as logs:
        # alexnet train's own Trainer arguments, less what would land in the timed window: checkpoint
        # writes and validation; the run is cut to the window's steps.
        args = trainer_arguments(plan, Path(logs), not progress_bar, [ThroughputMeter(), _WindowCallback(window)])
        args["callbacks"] = [c for c in args["callbacks"]
                             if not isinstance(c, (ModelCheckpoint, SaveWhenTrainingEnds))]
        args.pop("limit_train_batches", None)
        args.update(max_steps=total, max_epochs=-(-total // max(1, len(loader))), limit_val_batches=0,
                    enable_checkpointing=False)
        trainer = L.Trainer(**args)
        trainer.fit(module, datamodule=_LoaderDataModule(lambda: loader))
    _close(loader)
    return window


def _close(loader) -> None:
    if hasattr(loader, "close"):
        loader.close()  # DALI's threads would otherwise idle on, beside the next measurement
