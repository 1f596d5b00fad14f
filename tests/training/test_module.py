"""The LightningModule asks the running layout what depends on how the devices share the network."""

import lightning as L
import pytest

from alexnet_cli.models import build_model
from alexnet_cli.parallel.layouts import LAYOUTS
from alexnet_cli.recipes import OptimConfig
from alexnet_cli.training.module import AlexNetModule


def _module(batch_size: int) -> AlexNetModule:
    return AlexNetModule(build_model("paper", 10, fc_width=16), OptimConfig(lr=0.01, reference_batch=128),
                         num_classes=10, meta={}, batch_size=batch_size)


@pytest.mark.parametrize(("layout", "devices", "shards"), [
    ("ddp", 4, 4), ("hybrid", 4, 2), ("two-gpu", 2, 1), ("weird-trick", 4, 4)])
def test_the_learning_rate_scales_with_the_layouts_data_parallel_size(layout, devices, shards):
    module = _module(batch_size=32)
    module.trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=LAYOUTS[layout].lightning_strategy(),
                               logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert module.learning_rate() == pytest.approx(0.01 * 32 * shards / 128)


def test_outside_a_run_the_module_is_one_data_parallel_rank():
    assert _module(batch_size=64).learning_rate() == pytest.approx(0.01 * 64 / 128)

