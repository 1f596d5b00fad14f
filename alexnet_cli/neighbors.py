"""``alexnet neighbors``: the paper's Figure 4, images retrieved by their last hidden layer (§6.1).

Training images are embedded by the 4096-d activations that feed the class layer
(fc7 after its ReLU), once, and cached beside the checkpoint; a query image's
neighbours are the training images at the smallest Euclidean distance.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from alexnet_cli.atomic import write_atomic, write_text_atomic
from alexnet_cli.checkpoints import LoadedCheckpoint, load_checkpoint
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress, SilentProgress

THUMBNAIL = 96  # pixels per image in the grid


@dataclass
class NeighbourResult:
    query: str
    neighbours: list[tuple[str, float]]  # (training image, distance), nearest first


def penultimate_features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input of the class layer: fc7's activations for every arch of the zoo."""
    captured = []
    last = list(model.classifier.children())[-1]
    hook = last.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    try:
        model(images)
    finally:
        hook.remove()
    return captured[0]


def embed_training_set(loaded: LoadedCheckpoint, checkpoint: Path, data: Path, *, split: str = "train",
                       batch_size: int = 32, progress: Progress | None = None) -> tuple[np.ndarray, list[str]]:
    """fc7 codes of every image of ``split``, cached as ``<checkpoint>.<split>-fc7.npy`` (+ .json)."""
    from alexnet_cli.data.datamodule import DaliDataModule
    from alexnet_cli.evaluate import normalization_from_meta
    from alexnet_cli.recipes import DataConfig

    progress = progress or SilentProgress()
    module = DaliDataModule(data, DataConfig(device="cpu", batch_size=batch_size, num_threads=2,
                                             resize_size=loaded.meta.get("resize_size", 256)),
                            crop=loaded.meta["crop"], normalization=normalization_from_meta(loaded.meta))
    files = [str(f) for f in module.split(split).files]
    cache = Path(f"{checkpoint}.{split}-fc7.npy")
    index = cache.with_suffix(".json")
    stamp = {"checkpoint_mtime_ns": Path(checkpoint).stat().st_mtime_ns, "files": files}
    if cache.is_file() and index.is_file() and json.loads(index.read_text()) == stamp:
        return np.load(cache), files
    codes = []
    loader = module.loader(split, "val", batch_size=batch_size, shard=(0, 1))
    with progress.task(f"embedding {split} images (fc7)", len(files)) as task, torch.inference_mode():
        for images, _ in loader:
            codes.append(penultimate_features(loaded.model, images).numpy().copy())
            task.advance(len(images))
    embedded = np.concatenate(codes).astype(np.float32)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, embedded)

    write_atomic(cache, save)
    write_text_atomic(index, json.dumps(stamp))
    return embedded, files


def find_neighbours(checkpoint: Path, data: Path, queries: list[Path], *, k: int = 6,
                    out: Path | None = None, progress: Progress | None = None) -> list[NeighbourResult]:
    from alexnet_cli.predict import preprocess

    if k < 1:
        raise AlexnetError("--k must be at least 1")
    loaded = load_checkpoint(Path(checkpoint))
    codes, files = embed_training_set(loaded, Path(checkpoint), Path(data), progress=progress)
    with torch.inference_mode():
        query_codes = penultimate_features(loaded.model, preprocess(loaded.meta, queries)).numpy()
    distances = np.sqrt(((query_codes[:, None, :] - codes[None, :, :]) ** 2).sum(-1))
    results = []
    for query, row in zip(queries, distances):
        nearest = np.argsort(row, kind="stable")[:k]
        results.append(NeighbourResult(str(query), [(files[i], float(row[i])) for i in nearest]))
    if out is not None:
        save_grid(results, Path(out))
    return results


def save_grid(results: list[NeighbourResult], out: Path) -> None:
    """One row per query: the query, then its neighbours, nearest first."""
    if out.suffix.lower() != ".png":
        raise AlexnetError(f"--out {out}: the grid is written as a .png file")
    columns = 1 + max(len(r.neighbours) for r in results)
    gap = 4
    canvas = Image.new("RGB", (columns * (THUMBNAIL + gap) + gap, len(results) * (THUMBNAIL + gap) + gap), "white")
    for row, result in enumerate(results):
        paths = [result.query] + [path for path, _ in result.neighbours]
        for column, path in enumerate(paths):
            with Image.open(path) as image:
                tile = TF.center_crop(image.convert("RGB"), min(image.size)).resize((THUMBNAIL, THUMBNAIL))
            x = gap + column * (THUMBNAIL + gap)
            canvas.paste(tile, (x, gap + row * (THUMBNAIL + gap)))
    write_atomic(out, lambda tmp: canvas.save(tmp, format="PNG"))
