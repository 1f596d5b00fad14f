"""The DataModule's shard when nothing tells it the layout: Lightning's own numbering of its processes."""

import lightning as L

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.recipes import DataConfig


def test_a_module_handed_to_a_trainer_directly_reads_the_shard_of_its_rank(prepared):
    module = DaliDataModule(prepared, DataConfig(device="cpu", batch_size=2), crop=64)
    assert module.shard() == (0, 1)  # no trainer: the whole split
    module.trainer = L.Trainer(accelerator="cpu", devices=3, strategy="ddp", logger=False,
                               enable_checkpointing=False, enable_progress_bar=False)
    assert module.shard() == (0, 3)


def test_the_layouts_shard_function_overrides_the_trainers_numbering(prepared):
    module = DaliDataModule(prepared, DataConfig(device="cpu", batch_size=2), crop=64,
                            shard_of=lambda trainer: (1, 2))
    module.trainer = L.Trainer(accelerator="cpu", devices=3, strategy="ddp", logger=False,
                               enable_checkpointing=False, enable_progress_bar=False)
    assert module.shard() == (1, 2)


def test_the_training_loader_draws_with_the_recipes_switches_and_the_datasets_basis(prepared):
    from alexnet_cli.data.stats import load_stats

    config = DataConfig(device="cpu", batch_size=2, mirror=False, pca_std=0.3)
    loader = DaliDataModule(prepared, config, crop=64, seed=5).loader("train", "train", shard=(0, 1))
    try:
        augmentation = loader.augmentation
        assert (augmentation.mirror, augmentation.pca_std, augmentation.crop, augmentation.seed) == (False, 0.3, 64, 5)
        assert (augmentation.eigval == load_stats(prepared).eigval).all()
    finally:
        loader.close()
