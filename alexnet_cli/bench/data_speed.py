"""``alexnet benchmark data``: a recipe's DALI training pipeline vs torchvision + DataLoader (ImageFolder's
way: PIL in worker processes) doing the same work (resize if needed, crop, flip, PCA lighting, the recipe's
normalisation), measured in the same run."""

import io
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from alexnet_cli.bench.speed import synchronize
from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.devices import require_gpu
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.training.plan import crop_size


@dataclass
class DataBenchmark:
    dali_img_s: float  # medians over the repeats
    torchvision_img_s: float
    ratio: float
    batch_size: int
    dali_threads: int
    dali_py_workers: int
    baseline_workers: int
    device: str
    normalize: str
    batches: int
    warmup: int
    repeats: int = 1
    dali_runs: list[float] = field(default_factory=list)
    torchvision_runs: list[float] = field(default_factory=list)
    packed_img_s: float | None = None  # --packed: the same pipeline on the packed twin
    packed_runs: list[float] = field(default_factory=list)
    opens_per_1000: dict[str, float] = field(default_factory=dict)  # files (or shards) opened per 1,000 images


class TorchvisionTwin:
    """The pipeline's work per image done torchvision's way, in DataLoader workers: PIL decode, the resize
    if the dataset is not stored at the recipe's size, the §4.1 crop, flip and PCA shift drawn by the
    same ``Augmentation`` as the pipeline's, and the same normalisation (channel, or the mean image
    cropped and flipped like the image)."""

    def __init__(self, augmentation, normalization, crop: int, resize: int | None) -> None:
        self.augmentation, self.normalization, self.crop, self.resize = augmentation, normalization, crop, resize
        self.normalize = normalization.in_torch()

    def __call__(self, image) -> torch.Tensor:
        if self.resize:
            image = TF.resize(image, self.resize)
        draw = self.augmentation.draw(0, random.getrandbits(31), 0, 1)  # workers are seeded apart
        width, height = image.size
        x, y = (draw["position"][0] * [width - self.crop, height - self.crop]).round().astype(int)
        pixels = TF.pil_to_tensor(TF.crop(image, int(y), int(x), self.crop, self.crop)).float()
        pixels += torch.as_tensor(draw["shift"][0])[:, None, None]
        pixels = self.normalize(pixels, int(x), int(y))
        return pixels.flip(-1) if draw["mirror"][0] else pixels


class SplitImages(torch.utils.data.Dataset):
    """ImageFolder over either format: a sample's bytes from its file or its shard (each worker process opens
    its own), decoded by PIL."""

    def __init__(self, split, transform) -> None:
        self.reader, self.labels, self.transform = split.reader(), split.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(io.BytesIO(self.reader.read(index).tobytes())) as image:
            return self.transform(image.convert("RGB")), int(self.labels[index])


def _torchvision_loader(split, transform, *, batch_size: int, workers: int):
    dataset = SplitImages(split, transform)
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
        synchronize(images.device)  # a GPU batch exists once its kernels are done; a CPU batch already does
        task.advance()
    return batches * batch_size / (time.perf_counter() - started)


def _cycle(loader):
    while True:
        yield from loader


def benchmark_data(data: Path, recipe, *, baseline_workers: int | None = None, batches: int = 20, warmup: int = 3,
                   repeats: int = 1, packed: Path | None = None, progress: Progress | None = None) -> DataBenchmark:
    """img/s of the recipe's DALI training pipeline and of torchvision doing the same work on the same files,
    each run ``repeats`` times, alternating, medians reported. The baseline gets ``baseline_workers``
    DataLoader workers (default: the recipe's DALI threads). ``packed``: ``data``'s packed twin, whose
    pipeline is timed beside it (same images, same order), with the opens of each."""
    progress = progress or SilentProgress()
    config = recipe.data
    if config.device == "gpu":
        require_gpu(f"recipe {recipe.name!r} (data.device=gpu)", "use --device cpu")
    module = DaliDataModule(Path(data), config, crop=crop_size(recipe), seed=recipe.seed)
    dali_workers = module.workers
    batch_size, workers = config.batch_size, baseline_workers or dali_workers.threads
    if len(module.split("train")) < batch_size:
        raise AlexnetError(f"{data}/train has fewer than --batch-size {batch_size} images")
    if repeats < 1:
        raise AlexnetError("--repeats must be at least 1")
    packed_module = _packed_twin(module, packed, recipe) if packed is not None else None
    dali_runs, baseline_runs, packed_runs, opens = [], [], [], {}
    for _ in range(repeats):  # alternate the sides: drift on a shared machine hits both alike
        for name, source in (("files", module), ("packed", packed_module)):
            if source is None:
                continue
            with progress.task(f"DALI pipeline, {config.device}, {name}", warmup + batches) as task:
                loader = source.loader("train", "train", shard=(0, 1))
                (dali_runs if name == "files" else packed_runs).append(
                    _images_per_second(loader, batches, warmup, batch_size, task))
                loader.close()  # before the baseline forks its workers
                opens[name] = 1000 * loader.files_opened / ((warmup + batches) * batch_size)
        with progress.task(f"torchvision ImageFolder, {workers} workers", warmup + batches) as task:
            augmentation = loader.augmentation
            twin = TorchvisionTwin(augmentation, module.normalization, module.crop, module.resize_size)
            baseline_loader = _torchvision_loader(module.split("train"), twin, batch_size=batch_size, workers=workers)
            baseline_runs.append(_images_per_second(baseline_loader, batches, warmup, batch_size, task))
            del baseline_loader  # its workers exit before the next DALI run
    dali, baseline = statistics.median(dali_runs), statistics.median(baseline_runs)
    return DataBenchmark(dali, baseline, dali / baseline, batch_size, dali_workers.threads, dali_workers.readers,
                         workers, config.device, config.normalize, batches, warmup, repeats, dali_runs, baseline_runs,
                         statistics.median(packed_runs) if packed_runs else None, packed_runs, opens)


def _packed_twin(module: DaliDataModule, packed: Path, recipe) -> DaliDataModule:
    """The packed dataset's module, refused unless it holds ``module``'s samples (its fingerprint)."""
    twin = DaliDataModule(Path(packed), recipe.data, crop=module.crop, seed=recipe.seed)
    if not twin.info.get("packed"):
        raise AlexnetError(f"--packed {packed} is not a packed dataset: make it with 'alexnet pack {module.root} "
                           f"--out {packed}'")
    if twin.fingerprint is None or twin.fingerprint != module.fingerprint:
        raise AlexnetError(f"--packed {packed} does not hold {module.root}'s images (their fingerprints differ): "
                           f"give {module.root}'s packed twin")
    return twin


