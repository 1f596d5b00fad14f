"""``alexnet benchmark model``: forward and forward+backward+SGD step of a zoo network on synthetic tensors,
mean ± std over timed batches after warm-up (like the seeds' TF1 AlexNet benchmark), and the timing pieces
the other benchmarks share (``synchronize``, ``autocast``, the AMP training step)."""

import contextlib
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

from alexnet_cli.devices import require_gpu, torch_device
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import ARCHS, build_network
from alexnet_cli.models.execution import CompileOptions, compile_in_place
from alexnet_cli.models.lrn import LrnImpl
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import ModelConfig, OptimConfig
from alexnet_cli.training.optimizer import sgd

Precision = Literal["32", "bf16-mixed", "16-mixed"]


@dataclass(frozen=True)
class ModelVariant:
    """One way of running a network: precision and the switches of ``models/execution.py``."""

    precision: Precision = "32"
    lrn_impl: LrnImpl = "auto"
    channels_last: bool = False
    split_groups: bool = False
    compile_mode: str | None = None  # None: eager; else torch.compile's mode ("reduce-overhead": CUDA graphs)
    lrn: bool = True  # False: the §3.3 ablation, the lower bound of what any LRN can cost

    @property
    def name(self) -> str:
        parts = ["fp32" if self.precision == "32" else self.precision]
        if not self.lrn:
            parts.append("no LRN")
        elif self.lrn_impl != "auto":  # auto: the default, which the name leaves unsaid
            parts.append(f"{self.lrn_impl} LRN")
        parts += ["channels_last"] if self.channels_last else []
        parts += ["split groups"] if self.split_groups else []
        if self.compile_mode is None:
            parts.append("eager")
        else:
            parts.append("compiled" if self.compile_mode == "default" else f"compiled ({self.compile_mode})")
        return " ".join(parts)


# The paper network's speed step by step (issues 22 and 28): the code before issue 22 (the reference LRN), before
# issue 28 (the closed form), today's default (auto: Triton's kernels), then one switch more per row, compiled
# last, and the ablation without LRN as a lower bound. Triton's kernels run in NCHW only (models/lrn.choose_impl).
_BF16 = ModelVariant("bf16-mixed", lrn_impl="reference")
PAPER_MATRIX = [
    _BF16,
    replace(_BF16, lrn_impl="closed-form"),
    replace(_BF16, lrn_impl="auto"),
    replace(_BF16, lrn_impl="auto", split_groups=True),
    replace(_BF16, lrn_impl="closed-form", channels_last=True),
    replace(_BF16, lrn_impl="closed-form", channels_last=True, split_groups=True),
    replace(_BF16, lrn_impl="closed-form", channels_last=True, split_groups=True, lrn=False),
    replace(_BF16, lrn_impl="auto", compile_mode="default"),  # Triton's op inside Inductor's graph
    replace(_BF16, lrn_impl="closed-form", channels_last=True, split_groups=True, compile_mode="default"),
    replace(_BF16, lrn_impl="closed-form", channels_last=True, split_groups=True, compile_mode="reduce-overhead"),
]
# --compare: the layouts of plain fp32 eager one at a time, as ratios against it
COMPARE = [ModelVariant(), ModelVariant(channels_last=True), ModelVariant("bf16-mixed"),
           ModelVariant(compile_mode="default")]


@dataclass
class ModelBenchmark:
    arch: str
    variant: str
    batch_size: int
    device: str
    forward_ms: float
    forward_ms_std: float
    train_ms: float
    train_ms_std: float
    forward_img_s: float
    train_img_s: float
    peak_memory_mb: float
    cudnn_benchmark: bool = False  # cuDNN timed its algorithms first (the GPU recipes' trainer.benchmark)
    compile_seconds: float | None = None  # the first forward and train step, which compiled
    graphs: int | None = None  # compiled: the graphs dynamo captured (0: it all ran eagerly)
    graph_breaks: int | None = None


def benchmark_model(arch: str, *, batch_size: int = 128, device: Literal["cpu", "gpu"] = "cpu",
                    variant: ModelVariant = ModelVariant(), compile_backend: str = "inductor",
                    cudnn_benchmark: bool = True, warmup: int = 10, batches: int = 100, fc_width: int | None = None,
                    progress: Progress | None = None) -> ModelBenchmark:
    """Time forward and forward+backward+SGD step on synthetic data, device-synchronised.

    ``cudnn_benchmark``: let cuDNN time its algorithms for these shapes first, as the GPU recipes do
    (``trainer.benchmark``); without it the convolutions run cuDNN's heuristic pick. ``fc_width``: narrower
    hidden FC layers (the GPU check's CPU smoke run), where the arch takes them.
    """
    progress = progress or SilentProgress()
    if arch not in ARCHS:
        raise AlexnetError(f"--arch {arch!r}: choose one of all, {', '.join(ARCHS)}")
    if device == "gpu":
        require_gpu("--device gpu", "use --device cpu")
    target = torch_device(device)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    spec = ARCHS[arch]
    size = spec.input_size
    lrn = variant.lrn or "lrn" not in spec.options  # the no-LRN variant: for the archs that take the ablation
    config = ModelConfig(arch, fc_width=fc_width, lrn=lrn, lrn_impl=variant.lrn_impl, split_groups=variant.split_groups,
                         channels_last=variant.channels_last)
    model = build_network(config, 1000).to(target)
    images = torch.randn(batch_size, 3, size, size, device=target)
    labels = torch.randint(0, 1000, (batch_size,), device=target)
    if variant.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if variant.compile_mode:
        fresh_compile()
        compile_in_place(model, CompileOptions(variant.compile_mode, compile_backend))
    optimizer = sgd(model, OptimConfig(), OptimConfig().lr)  # train's own update, the paper's constants
    precision_context = autocast(variant.precision, target)
    step = amp_training_step(model, optimizer, variant.precision, target)

    def forward() -> None:
        with torch.no_grad(), precision_context():
            model(images)

    def train_step() -> None:
        step(images, labels)

    if device == "gpu":
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compile_seconds = None
    with progress.task(f"{arch} {variant.name}", 2 * (warmup + batches)) as task:
        graphs = breaks = None
        if variant.compile_mode:  # the compile, timed apart from the warm-up it would otherwise hide in
            started = time.perf_counter()
            forward(), train_step(), synchronize(target)
            compile_seconds = time.perf_counter() - started
            graphs, breaks = compile_counts()
        forward_times = _time(forward, warmup, batches, target, task)
        train_times = _time(train_step, warmup, batches, target, task)
    if device == "gpu":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    fwd, trn = statistics.mean(forward_times), statistics.mean(train_times)
    return ModelBenchmark(arch, variant.name, batch_size, device, fwd * 1e3, _std(forward_times) * 1e3, trn * 1e3,
                          _std(train_times) * 1e3, batch_size / fwd, batch_size / trn, peak,
                          cudnn_benchmark and device == "gpu", compile_seconds, graphs, breaks)


def fresh_compile() -> None:
    """Forget earlier compiles before a new variant's: every nn.Module.compile shares _call_impl's code cache, and
    past dynamo's recompile limit it would silently run the new one eagerly (``compile_counts`` would say so)."""
    torch._dynamo.reset()
    counters.clear()


def compile_counts() -> tuple[int, int]:
    """(graphs dynamo captured, graph breaks) since ``fresh_compile``: 0 graphs is a run that went eager."""
    return counters["stats"].get("unique_graphs", 0), sum(counters["graph_break"].values())


def amp_training_step(model: nn.Module, optimizer: torch.optim.Optimizer, precision: str,
                      device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD step as Lightning's precision plugin runs it: forward and loss under autocast, an fp16 loss
    scaled (``benchmark model`` and ``benchmark train``'s plain loop both time it)."""
    context = autocast(precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        with context():
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def autocast(precision: str, device: torch.device):
    """A factory of the context Lightning's precision plugin puts around the forward pass."""
    if precision in ("32", "32-true"):
        return contextlib.nullcontext
    if precision not in ("bf16-mixed", "16-mixed"):
        raise AlexnetError(f"precision {precision!r}: use 32, bf16-mixed or 16-mixed")
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def _time(step, warmup: int, batches: int, device: torch.device, task) -> list[float]:
    for _ in range(warmup):
        step()
        task.advance()
    times = []
    for _ in range(batches):
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
        task.advance()
    return times


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
