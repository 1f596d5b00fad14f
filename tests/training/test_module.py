"""The LightningModule asks the running layout what depends on how the devices share the network."""

import lightning as L
import pytest
import torch

from alexnet_cli.models import build_model
from alexnet_cli.models.execution import set_lrn_impl
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


def test_a_run_asking_for_triton_off_a_gpu_says_once_that_the_closed_form_runs(monkeypatch):
    """The choice is made when fit starts, on the device it trains on, and said in one line: here the CPU, where
    Triton's kernels cannot run (outside its interpreter), so the closed form does and the run goes on."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    said = []
    model = build_model("paper", 10, fc_width=16)
    set_lrn_impl(model, "triton")
    module = AlexNetModule(model, OptimConfig(lr=0.01), num_classes=10, meta={}, batch_size=2, say=said.append)
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 3, 227, 227),
                                                                         torch.tensor([1, 7, 2, 9])), batch_size=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=batches)
    assert trainer.global_step == 2
    assert said == ["model.lrn_impl=triton needs a CUDA GPU: the closed form (the same formula) runs on the CPU"]
