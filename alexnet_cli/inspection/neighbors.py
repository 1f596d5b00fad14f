"""``alexnet neighbors``: the paper's Figure 4, images retrieved by their last hidden layer (§6.1).

Training images are embedded by the activations that feed the class layer (fc7 after its
ReLU, 4096-d), once, into a code file beside the checkpoint; a query image's neighbours are
the training images at the smallest Euclidean distance. At ImageNet's size the codes are
1.28 M × 4096: they are stored as float16 rows (10.5 GB instead of 21), written in order and
resumable after an interruption, and searched chunk by chunk with a running top-k, so memory
stays bounded whatever the number of images.
"""

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from alexnet_cli.atomic import write_atomic, write_text_atomic
from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.feed import SKIPPED
from alexnet_cli.data.prepare.convert import to_rgb8
from alexnet_cli.data.splits import Split
from alexnet_cli.devices import dali_device_id, require_gpu, torch_device
from alexnet_cli.errors import AlexnetError
from alexnet_cli.inspection.predict import preprocess
from alexnet_cli.models.checkpoints import LoadedCheckpoint, load_checkpoint
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import DataConfig

THUMBNAIL = 96  # pixels per image in the grid
CODE_WIDTH = 4096  # fc7 of the paper's network
SEARCH_ROWS = 32_768  # codes per distance block: 512 MB of float32 at 4096-d


class DamagedCodes(Exception):
    """The store holds values embedding never writes (infinities): it was damaged after it was written."""


@dataclass
class NeighbourResult:
    query: str
    neighbours: list[tuple[str, float]]  # (training image, distance), nearest first


class CodeStore:
    """``rows`` codes of ``width`` float16 values in ``<prefix>.f16``, filled in order; ``<prefix>.json``
    says how many rows are written and what they were computed from. A store whose ``stamp``
    differs from the one asked for starts again from row 0. Rows are read and written with plain
    file I/O, not a memory map: mapped pages of a 10 GB file would count as this process's memory."""

    def __init__(self, prefix: Path, rows: int, width: int, stamp: dict | None = None) -> None:
        self.path, self.index = Path(f"{prefix}.f16"), Path(f"{prefix}.json")
        self.rows, self.width = rows, width
        self.stamp = {"rows": rows, "width": width, **(stamp or {})}
        saved = self._saved()
        done = saved.get("done")
        valid = isinstance(done, int) and 0 <= done <= rows  # anything else: a damaged index, built again
        fresh = not valid or saved.get("stamp") != self.stamp or not self.path.is_file() \
            or self.path.stat().st_size != rows * width * 2
        if fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.index.unlink(missing_ok=True)
            with open(self.path, "wb") as handle:
                handle.truncate(rows * width * 2)  # sparse until written
        self.done = 0 if fresh else int(saved["done"])

    def _saved(self) -> dict:
        try:
            saved = json.loads(self.index.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    @property
    def complete(self) -> bool:
        return self.done >= self.rows

    def write(self, start: int, codes: np.ndarray) -> None:
        with open(self.path, "r+b") as handle:
            handle.seek(start * self.width * 2)
            handle.write(np.ascontiguousarray(codes, dtype=np.float16).tobytes())

    def read(self, start: int, count: int) -> np.ndarray:
        count = max(0, min(count, self.rows - start))
        codes = np.fromfile(self.path, dtype=np.float16, count=count * self.width, offset=start * self.width * 2)
        return codes.reshape(count, self.width)

    def mark_done(self, rows: int) -> None:
        """Rows before ``rows`` are on disk: sync them, then say so (a crash in between costs a redo)."""
        with open(self.path, "r+b") as handle:
            os.fsync(handle.fileno())
        self.done = rows
        write_text_atomic(self.index, json.dumps({"stamp": self.stamp, "done": rows}))


def nearest(store: CodeStore, queries: np.ndarray, *, k: int, device: torch.device | str = "cpu",
            block_rows: int = SEARCH_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest stored codes to each query: (indices, distances), nearest first. Reads the store
    ``block_rows`` at a time and keeps a running top-k, so memory does not grow with the store. Rows that
    of NaN (images that could not be read) are never returned: where fewer than ``k`` usable rows
    exist, the places left over keep an infinite distance."""
    device = torch.device(device)
    q = torch.as_tensor(queries, dtype=torch.float32, device=device)
    k = min(k, store.rows)
    best_d = torch.full((len(q), k), float("inf"), device=device)
    best_i = torch.full((len(q), k), -1, dtype=torch.int64, device=device)
    for start in range(0, store.rows, block_rows):
        block = torch.from_numpy(store.read(start, block_rows)).to(device).float()
        if torch.isinf(block).any():  # embedding writes finite rows, or NaN rows for unreadable images
            raise DamagedCodes(f"{store.path} holds infinite values")
        distances = torch.cdist(q, block)  # NaN for a row of NaN, which topk ranks after every number
        candidates_d = torch.cat([best_d, distances], dim=1)
        candidates_i = torch.cat([best_i, torch.arange(start, start + len(block), device=device).expand(len(q), -1)],
                                 dim=1)
        best_d, order = candidates_d.topk(k, dim=1, largest=False, sorted=True)
        best_i = candidates_i.gather(1, order)
    return best_i.cpu().numpy(), best_d.cpu().numpy()  # infinite distances: no usable row was left


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
                       batch_size: int = 32, device: Literal["cpu", "gpu"] = "cpu",
                       progress: Progress | None = None) -> tuple[CodeStore, Split]:
    """fc7 codes of every image of ``split`` in ``<checkpoint>.<split>-fc7.f16``, and the split that names its
    rows; an interrupted embedding continues where it stopped, a finished one is reused while checkpoint and
    samples are unchanged."""
    progress = progress or SilentProgress()
    form = loaded.meta.input
    module = DaliDataModule(data, DataConfig(device=device, batch_size=batch_size, num_threads=2,
                                             resize_size=form.resize_size),
                            crop=form.crop, normalization=form.input_normalization())
    samples = module.split(split)
    width = list(loaded.model.classifier.children())[-1].in_features
    # The dataset's fingerprint names its samples and their bytes (a packed twin's codes are its files'); a dataset
    # prepared before fingerprints is named by its files, 1.28 M names hashed.
    samples_are = ({"dataset": module.fingerprint} if module.fingerprint else
                   {"files_sha256": hashlib.sha256("\n".join(samples.name(i) for i in range(len(samples))).encode())
                    .hexdigest()})
    stamp = {"checkpoint_mtime_ns": Path(checkpoint).stat().st_mtime_ns, **samples_are}
    store = CodeStore(codes_prefix(Path(checkpoint), split), len(samples), width, stamp)
    if store.complete:
        return store, samples
    model = loaded.model.to(torch_device(device))
    loader = module.loader(split, "val", batch_size=batch_size, shard=(0, 1), device_id=dali_device_id(device))
    loader.seek(0, store.done // batch_size)  # done is a whole number of batches until the end
    row = store.done - store.done % batch_size
    with progress.task(f"embedding {split} images (fc7)", len(samples)) as task, torch.inference_mode():
        task.advance(row)
        for step, (images, labels) in enumerate(loader, start=1):
            codes = penultimate_features(model, images).float().cpu().numpy()
            skipped = (labels == SKIPPED).cpu().numpy()
            _check_codes(codes[~skipped], [samples.name(row + k) for k in range(len(codes)) if not skipped[k]],
                         checkpoint)
            codes[skipped] = np.nan  # a file that could not be read: never a neighbour
            store.write(row, codes)
            row += len(codes)
            if step % 100 == 0:
                store.mark_done(row)
            task.advance(len(codes))
    loader.close()
    store.mark_done(row)
    return store, samples


# The largest float16: a code beyond it would be stored as infinity.
FLOAT16_MAX = float(np.finfo(np.float16).max)


def _check_codes(codes: np.ndarray, images: list[str], checkpoint: Path) -> None:
    """Codes that cannot be stored or compared are the checkpoint's doing, not an image's: refuse them,
    rather than leave every image out and search nothing."""
    bad = ~(np.isfinite(codes) & (np.abs(codes) <= FLOAT16_MAX)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise AlexnetError(f"{checkpoint} gives {images[first]} fc7 activations that are NaN, infinite or beyond "
                           f"float16's {FLOAT16_MAX:,.0f}: a diverged checkpoint? Its neighbours cannot be searched")


def codes_prefix(checkpoint: Path, split: str) -> Path:
    """Where a checkpoint's codes live: beside it, or, where its folder is not writable (a shared
    model directory), in the user's cache under a name derived from the checkpoint's full path."""
    if os.access(checkpoint.resolve().parent, os.W_OK):
        return Path(f"{checkpoint}.{split}-fc7")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-cli" / "neighbors"
    key = hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()[:16]
    return cache / f"{checkpoint.name}-{key}.{split}-fc7"


def find_neighbours(checkpoint: Path, data: Path, queries: list[Path], *, k: int = 6, out: Path | None = None,
                    device: Literal["cpu", "gpu"] = "cpu", progress: Progress | None = None) -> list[NeighbourResult]:
    if k < 1:
        raise AlexnetError("--k must be at least 1")
    if device == "gpu":
        require_gpu("--device gpu", "use --device cpu")
    loaded = load_checkpoint(Path(checkpoint))
    target = torch_device(device)
    with torch.inference_mode():
        batch = preprocess(loaded.meta.input, queries).to(target)
        query_codes = penultimate_features(loaded.model.to(target), batch).float().cpu().numpy()
    _check_codes(query_codes, [str(q) for q in queries], Path(checkpoint))
    store, samples = embed_training_set(loaded, Path(checkpoint), Path(data), device=device, progress=progress)
    try:
        indices, distances = nearest(store, query_codes, k=k, device=target)
        if not np.isfinite(distances).any():
            raise DamagedCodes(f"{store.path} holds no usable code")
    except DamagedCodes as exc:  # a cache damaged after it was written: embed the training set again
        warnings.warn(f"{exc}; embedding the training images again", stacklevel=2)
        store.index.unlink(missing_ok=True)
        store, samples = embed_training_set(loaded, Path(checkpoint), Path(data), device=device, progress=progress)
        indices, distances = nearest(store, query_codes, k=k, device=target)
        if not np.isfinite(distances).any():
            raise AlexnetError(f"no training image of {data} could be read to search its neighbours") from None
    found = [[(int(i), float(d)) for i, d in zip(row_i, row_d) if np.isfinite(d)] for row_i, row_d in
             zip(indices, distances)]
    results = [NeighbourResult(str(query), [(samples.name(i), d) for i, d in row])
               for query, row in zip(queries, found)]
    if out is not None:
        images = {str(query): Path(query).read_bytes() for query in queries}
        images |= {samples.name(i): samples.read(i) for row in found for i, _ in row}
        save_grid(results, Path(out), images)
    return results


def save_grid(results: list[NeighbourResult], out: Path, images: dict[str, bytes]) -> None:
    """One row per query: the query, then its neighbours, nearest first; ``images`` holds each one's bytes by
    its name (a neighbour in a packed dataset is no file of its own)."""
    if out.suffix.lower() != ".png":
        raise AlexnetError(f"--out {out}: the grid is written as a .png file")
    columns = 1 + max(len(r.neighbours) for r in results)
    gap = 4
    canvas = Image.new("RGB", (columns * (THUMBNAIL + gap) + gap, len(results) * (THUMBNAIL + gap) + gap), "white")
    for row, result in enumerate(results):
        paths = [result.query] + [path for path, _ in result.neighbours]
        for column, path in enumerate(paths):
            with Image.open(io.BytesIO(images[path])) as image:
                tile = TF.center_crop(to_rgb8(image), min(image.size)).resize((THUMBNAIL, THUMBNAIL))
            x = gap + column * (THUMBNAIL + gap)
            canvas.paste(tile, (x, gap + row * (THUMBNAIL + gap)))
    write_atomic(out, lambda tmp: canvas.save(tmp, format="PNG"))
