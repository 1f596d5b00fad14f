"""The DataModule's shard when nothing tells it the layout: Lightning's own numbering of its processes."""

import lightning as L

from alexnet_cli.data.datamodule import DaliDataModule
from alexnet_cli.data.workers import Workers, workers_for
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


def test_auto_workers_divide_the_cores_this_process_may_use_between_the_ranks_here():
    auto = DataConfig()
    assert (auto.num_threads, auto.py_workers) == ("auto", "auto")
    assert workers_for(auto, 1, cores=16) == Workers(threads=12, readers=3)  # one core for the training thread
    assert workers_for(auto, 2, cores=16) == Workers(threads=6, readers=1)
    assert workers_for(auto, 8, cores=64) == Workers(threads=6, readers=1)
    assert workers_for(auto, 1, cores=128) == Workers(threads=123, readers=4)  # readers stop at 4
    assert workers_for(auto, 1, cores=2) == Workers(threads=2, readers=0)  # the training thread reads the files
    assert workers_for(auto, 3, cores=2) == Workers(threads=1, readers=0)
    assert workers_for(DataConfig(num_threads=5, py_workers=0), 4, cores=8) == Workers(threads=5, readers=0)
    assert workers_for(DataConfig(num_threads=3), 1, cores=16) == Workers(threads=3, readers=3)


def test_a_lightning_loader_queues_one_batch_more_and_shares_the_cores_with_the_trainers_ranks(prepared):
    config = DataConfig(device="cpu", batch_size=2, prefetch=3)
    module = DaliDataModule(prepared, config, crop=64)
    module.trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False,
                               enable_checkpointing=False, enable_progress_bar=False)
    assert module.workers == workers_for(config, ranks_here=2)  # the Trainer's two ranks share this machine
    train, evaluation = module.train_dataloader(), module.loader("val", "val")
    try:
        next(iter(train))
        assert train.prefetch == 4 and train._pipe.prefetch_queue_depth == 4  # Lightning holds batch i+1 early
        assert evaluation.prefetch == 3  # eval's own loop asks for one batch at a time
        assert train.num_threads == module.workers.threads and train.py_workers == module.workers.readers
    finally:
        train.close()
        evaluation.close()
