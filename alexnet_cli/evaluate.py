"""``alexnet eval``: the paper's ten-crop test (§4.1) or a single centre crop, top-1/top-5."""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from alexnet_cli.checkpoints import LoadedCheckpoint, load_checkpoint, load_torchvision_weights
from alexnet_cli.data.layout import read_classes
from alexnet_cli.data.loader import Normalization
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import DataConfig

# §6, Table 2: one CNN on the ILSVRC-2012 validation set.
PAPER_VAL_ERROR = {"top1": 0.407, "top5": 0.182}


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
             num_threads: int = 2, progress: Progress | None = None) -> EvalResult:
    """Evaluate a training checkpoint (or torchvision weights) on a prepared split."""
    from alexnet_cli.data.datamodule import DaliDataModule

    progress = progress or SilentProgress()
    data = Path(data)
    if (checkpoint is None) == (weights is None):
        raise AlexnetError("give exactly one of --checkpoint and --weights")
    classes = read_classes(data)
    if checkpoint is not None:
        loaded = load_checkpoint(Path(checkpoint))
        _check_classes(loaded, [c.wnid for c in classes], data)
    else:
        loaded = load_torchvision_weights(Path(weights), [vars(c) for c in classes])
        if loaded.meta["num_classes"] != len(classes):
            raise AlexnetError(f"{weights} has {loaded.meta['num_classes']} outputs but {data} has "
                               f"{len(classes)} classes")
    torch_device = torch.device("cuda") if device == "gpu" else torch.device("cpu")
    model = loaded.model.to(torch_device)
    config = DataConfig(device=device, batch_size=batch_size, num_threads=num_threads,
                        resize_size=loaded.meta.get("resize_size", 256), normalize="channel")
    module = DaliDataModule(data, config, crop=loaded.meta["crop"], normalization=_normalization(loaded.meta))
    loader = module.loader(split, "ten_crop" if ten_crop else "val", batch_size=batch_size, shard=(0, 1))
    num_classes = loaded.meta["num_classes"]
    k = min(5, num_classes)
    correct1 = correct5 = seen = 0
    per_class_hits = np.zeros(num_classes)
    per_class_seen = np.zeros(num_classes)
    started = time.perf_counter()
    with progress.task(f"eval {split} ({'10 crops' if ten_crop else 'centre crop'})", len(module.split(split))) as task, \
            torch.inference_mode():
        for images, labels in loader:
            probabilities = _probabilities(model, images)
            topk = probabilities.topk(k, dim=1).indices
            hits1 = (topk[:, 0] == labels).cpu().numpy()
            correct1 += int(hits1.sum())
            correct5 += int((topk == labels[:, None]).any(dim=1).sum())
            seen += len(labels)
            np.add.at(per_class_hits, labels.cpu().numpy(), hits1)
            np.add.at(per_class_seen, labels.cpu().numpy(), 1)
            task.advance(len(labels))
    seconds = time.perf_counter() - started
    wnids = [c["wnid"] for c in loaded.meta["classes"]]
    per_class = {w: float(per_class_hits[i] / per_class_seen[i]) for i, w in enumerate(wnids) if per_class_seen[i]}
    return EvalResult(seen, correct1 / seen, correct5 / seen, ten_crop, str(checkpoint or weights),
                      loaded.arch, per_class, seconds, seen / seconds if seconds else 0.0)


def _probabilities(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Softmax of a centre-crop batch, or the mean softmax over the ten crops (§4.1)."""
    if images.dim() == 4:
        return model(images).softmax(dim=1)
    batch, crops = images.shape[:2]
    logits = model(images.flatten(0, 1))
    return logits.softmax(dim=1).view(batch, crops, -1).mean(dim=1)


def _normalization(meta: dict) -> Normalization:
    norm = meta["normalization"]
    mean_image = norm.get("mean_image")
    return Normalization(np.asarray(norm["channel_mean"]), np.asarray(norm["channel_std"]),
                         None if mean_image is None else np.asarray(mean_image))


def _check_classes(loaded: LoadedCheckpoint, dataset_wnids: list[str], data: Path) -> None:
    if loaded.wnids != dataset_wnids:
        extra = sorted(set(dataset_wnids) - set(loaded.wnids))
        detail = f" (e.g. {extra[0]} is not among the checkpoint's)" if extra else ""
        raise AlexnetError(f"{data} has other classes than the checkpoint was trained on{detail}")
