"""``alexnet eval``: the paper's ten-crop test (§4.1) or a single centre crop, top-1/top-5."""

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.dataset_files import read_classes, read_dataset_info
from alexnet_cli.data.feed import SKIPPED
from alexnet_cli.data.splits import Split, read_split
from alexnet_cli.devices import dali_device_id, torch_device
from alexnet_cli.errors import AlexnetError
from alexnet_cli.inspection.paper_claims import VAL_TOP1_ERROR, VAL_TOP5_ERROR
from alexnet_cli.models.checkpoints import LoadedCheckpoint, load_checkpoint, load_torchvision_weights
from alexnet_cli.parallel.spawn import refuse_more_devices_than_present, run_in_processes
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import DataConfig

# The paper's one-CNN validation errors (see paper_claims), as fractions like eval's own results.
PAPER_VAL_ERROR = {"top1": VAL_TOP1_ERROR / 100, "top5": VAL_TOP5_ERROR / 100}


@dataclass
class EvalResult:
    images: int
    top1: float
    top5: float
    ten_crop: bool
    checkpoint: str
    arch: str
    per_class_top1: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    predictions: list[dict] | None = None  # with_predictions: per image, in the split's order
    skipped: list[str] = field(default_factory=list)  # files that could not be used: not scored, not counted

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(top1_error=self.top1_error, top5_error=self.top5_error)
        return data


def evaluate(data: Path, *, checkpoint: Path | None = None, weights: Path | None = None, split: str = "val",
             ten_crop: bool = True, batch_size: int = 32, device: Literal["cpu", "gpu"] = "cpu",
             num_threads: int = 2, devices: int = 1, with_predictions: bool = False,
             progress: Progress | None = None) -> EvalResult:
    """Evaluate a training checkpoint (or torchvision weights) on a prepared split.

    ``devices`` > 1 runs one process per device (gloo on CPU, NCCL on GPU), each over its own
    shard of the split; the counts are summed, so every image is counted exactly once.
    ``with_predictions`` (one device only): each image's label and top-5 classes, in the split's order.
    """
    data = Path(data)
    if (checkpoint is None) == (weights is None):
        raise AlexnetError("give exactly one of --checkpoint and --weights")
    if devices < 1:
        raise AlexnetError("--devices must be at least 1")
    if with_predictions and devices > 1:
        raise AlexnetError("--predictions needs --devices 1")
    if devices > 1:
        refuse_more_devices_than_present("--devices", devices, device)
    loaded = _load(data, checkpoint, weights)
    job = _EvalJob(data, checkpoint, weights, split, ten_crop, batch_size, device, num_threads)
    started = time.perf_counter()
    if devices == 1:
        tally = _evaluate_shard(job, loaded, (0, 1), progress or SilentProgress())
    else:
        tally = _evaluate_in_processes(job, devices)
    seconds = time.perf_counter() - started
    seen = tally.seen
    per_class = {w: float(tally.class_hits[i] / tally.class_seen[i])
                 for i, w in enumerate(loaded.wnids) if tally.class_seen[i]}
    predictions = None
    samples = _split(data, split) if with_predictions or tally.skipped else None
    if with_predictions:
        predictions = [{"file": samples.name(index), "label": label, "top5": top}
                       for index, label, top in tally.predictions]
    if not seen:
        raise AlexnetError(f"no image of {data}/{split} could be used: prepare the dataset again")
    return EvalResult(seen, tally.top1 / seen, tally.top5 / seen, ten_crop, str(checkpoint or weights),
                      loaded.arch, per_class, seconds, seen / seconds if seconds else 0.0, predictions,
                      [samples.name(index) for index in sorted(tally.skipped)])


@dataclass
class Tally:
    """Eval's counts over the images scored so far; ``all_reduce`` sums them over the processes of a
    multi-process eval, each of which scored its own shard."""

    class_hits: torch.Tensor  # per class: top-1 hits (float64, on the CPU)
    class_seen: torch.Tensor  # per class: images scored
    top1: int = 0
    top5: int = 0
    predictions: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (index in the split, label, top-k)
    skipped: list[int] = field(default_factory=list)  # indices in the split of files that could not be used

    @classmethod
    def empty(cls, num_classes: int) -> "Tally":
        return cls(torch.zeros(num_classes, dtype=torch.float64), torch.zeros(num_classes, dtype=torch.float64))

    @property
    def seen(self) -> int:
        return int(self.class_seen.sum())

    def add(self, indices: np.ndarray, labels: torch.Tensor, topk: torch.Tensor) -> int:
        """One batch: the images' ``indices`` in the split, their ``labels`` and ``topk`` classes, most probable
        first; returns how many were scored. A label ``SKIPPED`` marks a file that could not be used: listed,
        never scored."""
        used = labels != SKIPPED
        if not bool(used.all()):
            self.skipped += indices[~used.cpu().numpy()].tolist()
            indices, labels, topk = indices[used.cpu().numpy()], labels[used], topk[used]
        self.predictions += zip(indices.tolist(), labels.tolist(), topk.tolist())
        hits1 = topk[:, 0] == labels
        self.top1 += int(hits1.sum())
        self.top5 += int((topk == labels[:, None]).any(dim=1).sum())
        labels = labels.cpu()
        self.class_hits.index_add_(0, labels, hits1.cpu().to(torch.float64))
        self.class_seen.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))
        return len(labels)

    def all_reduce(self, device: torch.device) -> None:
        """Sum the counts of every process in the group (each image was counted by exactly one) and gather their
        skipped files, in place; the predictions, which only a single process keeps, are dropped."""
        skipped: list[list[int]] = [[] for _ in range(dist.get_world_size())]
        dist.all_gather_object(skipped, self.skipped)
        self.skipped = sorted(index for part in skipped for index in part)
        classes = len(self.class_hits)
        hits = torch.tensor([self.top1, self.top5], dtype=torch.float64)
        counts = torch.cat([self.class_hits, self.class_seen, hits]).to(device)
        dist.all_reduce(counts)
        counts = counts.cpu()
        self.class_hits, self.class_seen = counts[:classes], counts[classes : 2 * classes]
        self.top1, self.top5 = int(counts[-2]), int(counts[-1])
        self.predictions = []


@dataclass(frozen=True)
class _EvalJob:
    data: Path
    checkpoint: Path | None
    weights: Path | None
    split: str
    ten_crop: bool
    batch_size: int
    device: str
    num_threads: int


def _load(data: Path, checkpoint: Path | None, weights: Path | None) -> LoadedCheckpoint:
    classes = read_classes(data)
    if checkpoint is not None:
        loaded = load_checkpoint(Path(checkpoint))
        _check_classes(loaded, [c.wnid for c in classes], data)
        return loaded
    loaded = load_torchvision_weights(Path(weights), classes)
    if loaded.meta.num_classes != len(classes):
        raise AlexnetError(f"{weights} has {loaded.meta.num_classes} outputs but {data} has "
                           f"{len(classes)} classes")
    return loaded


def _evaluate_shard(job: _EvalJob, loaded: LoadedCheckpoint, shard: tuple[int, int], progress: Progress,
                    device_index: int = 0) -> Tally:
    """Top-1/top-5 hits and per-class counts over one shard of the split."""
    device = torch_device(job.device, device_index)
    model = loaded.model.to(device)
    form = loaded.meta.input
    config = DataConfig(device=job.device, batch_size=job.batch_size, num_threads=job.num_threads,
                        resize_size=form.resize_size, normalize="channel")
    module = DaliDataModule(job.data, config, crop=form.crop, normalization=form.input_normalization())
    loader = module.loader(job.split, "ten_crop" if job.ten_crop else "val", batch_size=job.batch_size, shard=shard,
                           device_id=dali_device_id(job.device, device_index))
    tally = Tally.empty(loaded.meta.num_classes)
    label = f"eval {job.split} ({'10 crops' if job.ten_crop else 'centre crop'})"
    try:
        _score(loader, model, tally, progress, label)
    finally:
        loader.close()  # now: a worker process exiting with a live pipeline would wait for its reader forever
    return tally


def _score(loader, model: torch.nn.Module, tally: Tally, progress: Progress, label: str) -> None:
    k = min(5, len(tally.class_seen))
    with progress.task(label, loader.plan.shard_size) as task, torch.inference_mode():
        for step, (images, labels) in enumerate(loader):
            topk = _probabilities(model, images).topk(k, dim=1).indices
            task.advance(tally.add(loader.plan.batch_indices(0, step), labels, topk))


def _evaluate_in_processes(job: _EvalJob, devices: int) -> Tally:
    state = run_in_processes(partial(_shard_totals, job), devices, backend="nccl" if job.device == "gpu" else "gloo")
    return Tally(**state)


def _shard_totals(job: _EvalJob, rank: int, world: int) -> dict:
    """This process's shard counted, then the counts of all processes summed (as a dict: what comes back from
    ``run_in_processes``)."""
    loaded = _load(job.data, job.checkpoint, job.weights)
    tally = _evaluate_shard(job, loaded, (rank, world), SilentProgress(), device_index=rank)
    tally.all_reduce(torch_device(job.device, rank))
    return vars(tally)


def _split(data: Path, split: str) -> Split:
    """The split in the loader's order (class order, then name): what names its samples."""
    return read_split(Path(data), split, read_classes(Path(data)), read_dataset_info(Path(data)))


def _probabilities(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Softmax of a centre-crop batch, or the mean softmax over the ten crops (§4.1)."""
    if images.dim() == 4:
        return model(images).softmax(dim=1)
    batch, crops = images.shape[:2]
    logits = model(images.flatten(0, 1))
    return logits.softmax(dim=1).view(batch, crops, -1).mean(dim=1)


def _check_classes(loaded: LoadedCheckpoint, dataset_wnids: list[str], data: Path) -> None:
    if loaded.wnids != dataset_wnids:
        extra = sorted(set(dataset_wnids) - set(loaded.wnids))
        detail = f" (e.g. {extra[0]} is not among the checkpoint's)" if extra else ""
        raise AlexnetError(f"{data} has other classes than the checkpoint was trained on{detail}")
