"""Which images make each batch, and every random choice about them, from (seed, epoch, step).

Training: each epoch is a fresh permutation of the whole set (seeded by epoch), cut
into ``num_shards`` equal slices, so every rank runs the same number of full
batches and data-parallel ranks never share an image. Evaluation: rank r takes
images r, r + shards, r + 2·shards, ... in order, and the last batch is short:
every image is counted exactly once, whatever the counts.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import DataConfig


@dataclass(frozen=True)
class ShardPlan:
    num_samples: int
    batch_size: int
    shard_id: int = 0
    num_shards: int = 1
    train: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard {self.shard_id} of {self.num_shards}")
        if self.train:
            check_one_batch_per_shard(self.num_samples, self.batch_size, self.num_shards)

    @property
    def shard_size(self) -> int:
        if self.train:
            return self.num_samples // self.num_shards
        return len(range(self.shard_id, self.num_samples, self.num_shards))

    @property
    def steps_per_epoch(self) -> int:
        if self.train:
            return self.shard_size // self.batch_size  # drop the ragged end: equal steps on all ranks
        return -(-self.shard_size // self.batch_size)

    def batch_indices(self, epoch: int, step: int) -> np.ndarray:
        if self.train:
            order = epoch_order(self.seed, epoch, self.num_samples)
            shard = order[self.shard_id * self.shard_size : (self.shard_id + 1) * self.shard_size]
        else:
            shard = np.arange(self.shard_id, self.num_samples, self.num_shards)
        return shard[step * self.batch_size : (step + 1) * self.batch_size]


def check_one_batch_per_shard(num_samples: int, batch_size: int, num_shards: int) -> None:
    """Refuse a training set that cannot give each of ``num_shards`` shards one full batch: ``train`` asks
    before any process starts, and every training ``ShardPlan`` again."""
    if (num_samples // num_shards) // batch_size == 0:
        raise AlexnetError(f"{num_samples} training images cannot fill one batch of {batch_size} on each of "
                           f"{num_shards} devices; lower data.batch_size")


def equal_steps_batch_size(num_samples: int, num_shards: int, batch_size: int) -> int:
    """The smallest evaluation batch size ≥ ``batch_size`` that gives every shard the same number of
    batches: where every forward is a collective (the weird-trick layout), a rank with one batch
    more than the others would wait for them forever."""
    sizes = [len(range(shard, num_samples, num_shards)) for shard in range(num_shards)]
    if min(sizes) == 0:
        raise AlexnetError(f"{num_samples} validation images cannot give each of {num_shards} devices one")
    while len({-(-size // batch_size) for size in sizes}) > 1:
        batch_size += 1
    return batch_size


@lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The epoch's permutation of the whole set, drawn once per epoch and process: at 1.28 M images
    drawing it costs tens of milliseconds, too much to repeat for every batch. Two are kept so that
    a process reading across an epoch boundary does not draw one twice."""
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    order.flags.writeable = False
    return order


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """The random choices of §4.1 for one batch, drawn from (seed, epoch, step, shard). Built by keyword:
    a new parameter is a new field with a default, and no caller's arguments shift."""

    crop: int
    image_size: int | None  # square stored size when known: offsets are then whole pixels
    mirror: bool
    pca_std: float
    eigval: np.ndarray
    eigvec: np.ndarray
    seed: int = 0

    @classmethod
    def from_config(cls, config: DataConfig, *, crop: int, image_size: int | None, eigval: np.ndarray,
                    eigvec: np.ndarray, seed: int) -> "Augmentation":
        """The recipe's ``data`` switches, with what the run adds: its crop, the stored size, the dataset's PCA
        basis and the seed. A new switch is one field above and one keyword here."""
        return cls(crop=crop, image_size=image_size, mirror=config.mirror, pca_std=config.pca_std, eigval=eigval,
                   eigvec=eigvec, seed=seed)

    def draw(self, epoch: int, step: int, shard_id: int, count: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, step, shard_id, 1])
        if self.image_size is not None:
            slack = self.image_size - self.crop
            offsets = rng.integers(0, slack + 1, size=(count, 2))
            # A quarter pixel past the whole offset, so that an operator that rounds the position back into
            # pixels and one that truncates it land on the same pixel (k/slack itself can come back as
            # k − ε). A safeguard only: the GPU/CPU difference first blamed on it was the JPEG decoder's.
            position = np.where(offsets < slack, offsets + 0.25, offsets) / max(slack, 1)
        else:
            offsets = None
            position = rng.uniform(0.0, 1.0, size=(count, 2))
        flips = rng.integers(0, 2, size=count) if self.mirror else np.zeros(count, np.int64)
        alpha = rng.normal(0.0, self.pca_std, size=(count, 3)) if self.pca_std > 0 else np.zeros((count, 3))
        # §4.1: add [p1 p2 p3][α1λ1 α2λ2 α3λ3]ᵀ to every pixel; λ, p for RGB in [0, 1], so ×255.
        shift = (alpha * self.eigval) @ self.eigvec.T * 255.0
        return {"position": position.astype(np.float32), "offsets": offsets, "mirror": flips.astype(np.int32),
                "alpha": alpha, "shift": shift.astype(np.float32)}


def trainer_rank(trainer) -> tuple[int, int]:
    """Plain data parallelism, as Lightning numbers its processes: every rank its own shard; one shard without a
    trainer (evaluation and benchmarks that split the data themselves pass ``loader`` their shard)."""
    return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
