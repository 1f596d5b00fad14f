"""``alexnet benchmark``: measured speed, always beside a baseline measured in the same run.

``data``: the DALI training pipeline vs torchvision's ImageFolder + DataLoader doing the
same work (crop, flip, PCA lighting, normalise), at equal threads/workers.
``model``: forward and forward+backward+SGD step of a zoo network on synthetic tensors,
mean ± std over timed batches after warm-up (like the seeds' TF1 AlexNet benchmark).
"""

import contextlib
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress, SilentProgress

Precision = Literal["32", "bf16-mixed", "16-mixed"]


@dataclass
class DataBenchmark:
    dali_img_s: float
    torchvision_img_s: float
    ratio: float
    batch_size: int
    threads: int
    device: str
    batches: int
    warmup: int


class PCALighting:
    """torchvision-side twin of the pipeline's PCA colour shift (§4.1), on uint8 CHW tensors."""

    def __init__(self, eigval: np.ndarray, eigvec: np.ndarray, std: float) -> None:
        self.eigval = torch.as_tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.as_tensor(eigvec, dtype=torch.float32)
        self.std = std

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        shift = self.eigvec @ (alpha * self.eigval) * 255.0
        return image.float() + shift[:, None, None]


def _torchvision_loader(root: Path, split: str, *, crop: int, resize: int | None, batch_size: int, workers: int,
                        stats):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    steps = [T.Resize(resize)] if resize else []
    steps += [T.RandomCrop(crop), T.RandomHorizontalFlip(), T.PILToTensor(),
              PCALighting(stats.eigval, stats.eigvec, 0.1),
              T.Normalize(stats.channel_mean.tolist(), stats.channel_std.tolist())]
    dataset = ImageFolder(str(root / split), transform=T.Compose(steps))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def _images_per_second(loader, batches: int, warmup: int, batch_size: int, task) -> float:
    iterator = _cycle(loader)
    for _ in range(warmup):
        next(iterator)
        task.advance()
    started = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
        images.sum().item()  # make sure the batch really exists (synchronises a GPU)
        task.advance()
    return batches * batch_size / (time.perf_counter() - started)


def _cycle(loader):
    while True:
        yield from loader


def benchmark_data(data: Path, *, batch_size: int = 128, threads: int = 2, device: Literal["cpu", "gpu"] = "cpu",
                   batches: int = 20, warmup: int = 3, crop: int = 227, resize_size: int = 256,
                   progress: Progress | None = None) -> DataBenchmark:
    """img/s of the DALI training pipeline and of the torchvision baseline, same data, same threads."""
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.recipes import DataConfig

    progress = progress or SilentProgress()
    config = DataConfig(device=device, batch_size=batch_size, num_threads=threads, resize_size=resize_size)
    module = DaliDataModule(Path(data), config, crop=crop)
    if len(module.split("train")) < batch_size:
        raise AlexnetError(f"{data}/train has fewer than --batch-size {batch_size} images")
    with progress.task("DALI pipeline", warmup + batches) as task:
        loader = module.loader("train", "train", shard=(0, 1))
        dali = _images_per_second(loader, batches, warmup, batch_size, task)
        loader.close()  # before the baseline forks its workers
    with progress.task(f"torchvision ImageFolder, {threads} workers", warmup + batches) as task:
        baseline_loader = _torchvision_loader(Path(data), "train", crop=crop, resize=module.resize_size,
                                              batch_size=batch_size, workers=threads, stats=module.stats)
        baseline = _images_per_second(baseline_loader, batches, warmup, batch_size, task)
    return DataBenchmark(dali, baseline, dali / baseline, batch_size, threads, device, batches, warmup)


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


def benchmark_model(arch: str, *, batch_size: int = 128, device: Literal["cpu", "gpu"] = "cpu",
                    precision: Precision = "32", channels_last: bool = False, compile: bool = False,
                    warmup: int = 10, batches: int = 100, progress: Progress | None = None) -> ModelBenchmark:
    """Time forward and forward+backward+SGD step on synthetic data, device-synchronised."""
    from alexnet_cli.models import ARCHS, build_model

    progress = progress or SilentProgress()
    if arch not in ARCHS:
        raise AlexnetError(f"--arch {arch!r}: choose one of all, {', '.join(ARCHS)}")
    if device == "gpu" and not torch.cuda.is_available():
        raise AlexnetError("--device gpu: no CUDA device is visible")
    torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    size = ARCHS[arch].input_size
    model = build_model(arch, 1000).to(torch_device)
    images = torch.randn(batch_size, 3, size, size, device=torch_device)
    labels = torch.randint(0, 1000, (batch_size,), device=torch_device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    runner = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    precision_context = autocast(precision, torch_device)
    scaler = torch.amp.GradScaler(enabled=precision == "16-mixed" and device == "gpu")

    def forward() -> None:
        with torch.no_grad(), precision_context():
            runner(images)

    def train_step() -> None:
        with precision_context():
            loss = torch.nn.functional.cross_entropy(runner(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    if device == "gpu":
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    variant = _variant_name(precision, channels_last, compile)
    with progress.task(f"{arch} {variant}", 2 * (warmup + batches)) as task:
        forward_times = _time(forward, warmup, batches, torch_device, task)
        train_times = _time(train_step, warmup, batches, torch_device, task)
    if device == "gpu":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    fwd, trn = statistics.mean(forward_times), statistics.mean(train_times)
    return ModelBenchmark(arch, variant, batch_size, device, fwd * 1e3, _std(forward_times) * 1e3, trn * 1e3,
                          _std(train_times) * 1e3, batch_size / fwd, batch_size / trn, peak)


def _variant_name(precision: str, channels_last: bool, compile: bool) -> str:
    parts = ["fp32" if precision == "32" else precision]
    parts += ["channels_last"] if channels_last else []
    parts += ["compiled"] if compile else ["eager"]
    return " ".join(parts)


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


def as_dict(result) -> dict:
    return asdict(result)
