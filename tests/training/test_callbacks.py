"""What the training callbacks measure: the data wait of a loop whose loader is the slow part."""

import time

import lightning as L
import torch

from alexnet_cli.training.callbacks import StepGaps, ThroughputMeter


def test_step_gaps_count_only_the_time_between_steps_while_counting():
    gaps = StepGaps()
    gaps.restart()
    time.sleep(0.05)  # waiting for the first batch
    gaps.step_started()
    time.sleep(0.05)  # the step itself
    gaps.step_ended()
    time.sleep(0.03)  # a gap that is not counted
    gaps.step_started(counting=False)
    assert 0.045 < gaps.wait < 0.08


class _SlowBatches(torch.utils.data.IterableDataset):
    def __iter__(self):
        for _ in range(4):
            time.sleep(0.2)  # the loader is the bottleneck
            yield torch.randn(8, 4), torch.randint(0, 2, (8,))


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.layer(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_throughput_meter_reports_a_slow_loader_as_data_wait(tmp_path):
    meter = ThroughputMeter()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[meter],
                        default_root_dir=tmp_path)
    trainer.fit(_Tiny(), train_dataloaders=torch.utils.data.DataLoader(_SlowBatches(), batch_size=None))
    assert meter.images == 32
    assert meter.data_wait_fraction > 0.6  # 4 × 0.2 s of loading against milliseconds of training
    # Lightning fetches the first batch before the epoch starts: 3 of the 4 loads fall in the timed epoch
    assert 32 / 2.0 < meter.images_per_second < 32 / 0.6


def test_the_progress_bar_counts_epochs_from_one_as_the_summary_and_the_report_do():
    import lightning as L

    from alexnet_cli.training.callbacks import SparseMetricsProgressBar

    bar = SparseMetricsProgressBar()
    trainer = L.Trainer(max_epochs=8, callbacks=[bar], logger=False, enable_checkpointing=False)
    bar.setup(trainer, None, stage="fit")
    assert bar._get_train_description(0).strip() == "Epoch 1/8"
    assert bar._get_train_description(7).strip() == "Epoch 8/8"
