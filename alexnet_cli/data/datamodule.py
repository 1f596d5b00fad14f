"""The Lightning DataModule: a prepared dataset → DALI loaders sharded by data-parallel rank."""

import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L

from alexnet_cli.data.dataset_files import ClassInfo, read_classes, read_dataset_info
from alexnet_cli.data.loader import DaliLoader
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.pipeline_options import PipelineOptions
from alexnet_cli.data.sampling import Augmentation, ShardPlan, equal_steps_batch_size, trainer_rank
from alexnet_cli.data.splits import Split, read_split
from alexnet_cli.data.stats import DatasetStats, load_stats
from alexnet_cli.data.workers import Workers, workers_for
from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import DataConfig

# The trainer (None outside a run) → (data-parallel rank, data-parallel size) of this process.
ShardOf = Callable[["L.Trainer | None"], tuple[int, int]]
# Lightning's data fetcher asks for batch i+1 before it runs step i (to know whether i is an epoch's last): one
# batch more in DALI's queue keeps the lead it had, so that asking for i+1 never makes step i wait.
LIGHTNING_LOOKAHEAD = 1


class DaliDataModule(L.LightningDataModule):
    """Reads ``root`` (see ``dataset_files``) with the pipelines of ``pipelines``.

    The shard is the data-parallel rank, which the run's layout tells (``shard_of``, given by the
    training setup): the Trainer's global rank under DDP (also the default, for a module handed to a
    Trainer directly), the tower pair's index under the two-GPU split (both towers of a pair read the
    same batch). ``collective_forward``: every forward is a
    collective (the weird-trick layout), so every rank must get as many evaluation batches.
    """

    def __init__(self, root: Path, config: DataConfig, *, crop: int, seed: int = 0,
                 normalization: Normalization | None = None, shard_of: ShardOf = trainer_rank,
                 collective_forward: bool = False) -> None:
        super().__init__()
        self.root, self.config, self.crop, self.seed = Path(root), config, crop, seed
        self.shard_of, self.collective_forward = shard_of, collective_forward
        self.classes: list[ClassInfo] = read_classes(self.root)
        self.info = read_dataset_info(self.root)
        if not self.info:
            warnings.warn(f"{self.root / 'dataset.json'} not found: the stored image size is unknown, so the pipeline "
                          "resizes every image (prepare the dataset with 'alexnet prepare-imagenet' to skip that)",
                          stacklevel=2)
        self._stats: DatasetStats | None = None
        self.normalization = normalization or self._normalization()
        self._splits: dict[str, Split] = {}
        self._resume_position: tuple[int, int] | None = None

    @property
    def stats(self) -> DatasetStats:
        """Read when first needed: an evaluation normalises from its checkpoint and needs none."""
        if self._stats is None:
            self._stats = load_stats(self.root)
        return self._stats

    @property
    def fingerprint(self) -> str | None:
        """The dataset's fingerprint (``data.fingerprint``) if prepare or pack wrote one."""
        return self.info.get("fingerprint")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def stored_square_size(self) -> int | None:
        """The side of the stored images if they are all square at the pipeline's resize size."""
        if self.info.get("mode") == "paper" and self.info.get("size") == self.config.resize_size:
            return self.config.resize_size
        return None

    @property
    def resize_size(self) -> int | None:
        """Resize in the pipeline only if the dataset is not stored at the wanted size."""
        return None if self.info.get("size") == self.config.resize_size else self.config.resize_size

    def _normalization(self) -> Normalization:
        stats = self.stats
        if self.crop > self.config.resize_size:
            raise AlexnetError(f"data.crop_size {self.crop} exceeds data.resize_size {self.config.resize_size}")
        if self.config.normalize == "channel":
            return Normalization(stats.channel_mean, stats.channel_std)
        if stats.mean_image is None or self.stored_square_size is None:
            raise AlexnetError(
                f"data.normalize=image needs a mean image of a dataset prepared with --mode paper --size "
                f"{self.config.resize_size}; {self.root} has none (use data.normalize=channel)"
            )
        return Normalization(stats.channel_mean, stats.channel_std, stats.mean_image)

    def split(self, name: str) -> Split:
        if name not in self._splits:
            self._splits[name] = read_split(self.root, name, self.classes, self.info)
        return self._splits[name]

    def shard(self) -> tuple[int, int]:
        """(data-parallel rank, data-parallel world size) of this process."""
        return self.shard_of(self.trainer)

    def _device_id(self) -> int | None:
        if self.config.device != "gpu":
            return None
        trainer = self.trainer
        return trainer.strategy.root_device.index if trainer is not None else 0

    @property
    def workers(self) -> Workers:
        """DALI's threads and readers for this rank: ``auto`` divides this process's cores between the ranks
        the Trainer runs on this machine."""
        return workers_for(self.config, self.trainer.num_devices if self.trainer is not None else 1)

    def loader(self, split: str, kind: str, *, batch_size: int | None = None,
               shard: tuple[int, int] | None = None, device_id: int | None = None,
               lookahead: int = 0) -> DaliLoader:
        """``lookahead``: batches the consumer asks for before it is done with the current one."""
        samples = self.split(split)
        shard_id, num_shards = shard or self.shard()
        train = kind == "train"
        batch_size = batch_size or self.config.batch_size
        if not train and shard is None and self.collective_forward:
            batch_size = equal_steps_batch_size(len(samples), num_shards, batch_size)
        plan = ShardPlan(len(samples), batch_size, shard_id, num_shards, train=train, seed=self.seed)
        augmentation = None
        if train:
            augmentation = Augmentation.from_config(self.config, crop=self.crop, image_size=self.stored_square_size,
                                                    eigval=self.stats.eigval, eigvec=self.stats.eigvec, seed=self.seed)
        options = PipelineOptions.from_config(
            self.config, device_id=device_id if device_id is not None else self._device_id(), crop=self.crop,
            resize_size=self.resize_size, normalization=self.normalization, augmentation=augmentation,
            workers=self.workers, seed=self.seed, lookahead=lookahead)
        return DaliLoader(kind, samples, plan, options,
                          steps_per_epoch=self._batch_limit(kind, plan.steps_per_epoch) if shard is None else None)

    def _batch_limit(self, kind: str, steps: int) -> int | None:
        """The Trainer's ``limit_*_batches`` in batches, as Lightning counts them: a loader that knows
        where its epoch ends keeps its pipeline running across epochs instead of rebuilding it."""
        trainer = self.trainer
        if trainer is None:
            return None
        limit = trainer.limit_train_batches if kind == "train" else trainer.limit_val_batches
        if isinstance(limit, int):
            return limit
        return int(steps * limit) if limit < 1.0 else None

    def resume_at(self, epoch: int, step: int) -> None:
        """The next training loader starts at (epoch, step): where a resumed checkpoint stopped."""
        self._resume_position = (epoch, step)

    def train_dataloader(self) -> DaliLoader:
        loader = self.loader("train", "train", lookahead=LIGHTNING_LOOKAHEAD)
        if self._resume_position is not None:
            loader.seek(*self._resume_position)
            self._resume_position = None
        elif self.trainer is not None:
            loader.seek(self.trainer.current_epoch)  # a checkpoint without a data position: its epoch's start
        return loader

    def val_dataloader(self) -> DaliLoader:
        return self.loader("val", "val", lookahead=LIGHTNING_LOOKAHEAD)
