"""The LightningModule: cross-entropy, the paper's SGD (§5), top-1/top-5 metrics."""

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from alexnet_cli.parallel.layout import data_parallel_group, data_parallel_shard
from alexnet_cli.recipes import OptimConfig


class AlexNetModule(L.LightningModule):
    """Trains any network of the zoo. ``meta`` is stored in every checkpoint (see ``checkpoints``)."""

    def __init__(self, model: nn.Module, optim: OptimConfig, *, num_classes: int, meta: dict[str, Any],
                 batch_size: int = 128) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.meta = meta
        self.batch_size = batch_size  # per data-parallel rank
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        # Sum, not mean: with short last batches and uneven shards only a sum weights every image once.
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        self._val_loss_sum += loss_sum.detach()
        self._val_count += labels.numel()

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum = torch.zeros((), device=self.device)
        self._val_count = torch.zeros((), device=self.device)

    def on_fit_start(self) -> None:
        # Metrics reduce over data-parallel ranks only: the two towers of a pair score the same images.
        group = data_parallel_group(self.trainer)
        self.val_top1.process_group = self.val_top5.process_group = group

    def on_validation_epoch_end(self) -> None:
        group = data_parallel_group(self.trainer)
        loss_sum = _sum_over(self._val_loss_sum, group)
        count = _sum_over(self._val_count, group)
        top1 = self.val_top1.compute()
        self.log("val/loss", loss_sum / count.clamp(min=1), sync_dist=False)
        self.log("val/top1", top1, prog_bar=True)
        self.log("val/top5", self.val_top5.compute())
        self.log("val/top1_error", 1.0 - top1)
        self.log("val/images", count.float())
        self.val_top1.reset()
        self.val_top5.reset()

    def learning_rate(self) -> float:
        """The recipe's lr, scaled linearly with the global batch if ``optim.reference_batch`` is set
        (Goyal et al. 2017: keeps large-batch data parallelism on the small-batch curve)."""
        cfg = self.optim
        if cfg.reference_batch is None:
            return cfg.lr
        world = data_parallel_shard(self._trainer)[1]
        return cfg.lr * self.batch_size * world / cfg.reference_batch

    def configure_optimizers(self) -> dict:
        cfg = self.optim
        optimizer = torch.optim.SGD(self.parameters(), lr=self.learning_rate(), momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        if cfg.schedule == "constant":
            return {"optimizer": optimizer}
        if cfg.schedule == "plateau":
            # §5: "divide the learning rate by 10 when the validation error rate stopped improving".
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.gamma, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
            return {"optimizer": optimizer, "lr_scheduler": {
                "scheduler": scheduler, "monitor": "val/top1_error", "interval": "epoch", "strict": False}}
        if cfg.schedule == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        else:
            epochs = max(1, self.trainer.max_epochs or 1)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["alexnet_cli"] = self.meta
        from alexnet_cli.parallel.towers import TowerParallelAlexNet, full_optimizer_state

        if isinstance(self.model, TowerParallelAlexNet):
            # Save the single-device layout: any recipe can load, evaluate or resume it.
            checkpoint["state_dict"] = {f"model.{k}": v for k, v in self.model.full_state_dict().items()}
            checkpoint["optimizer_states"] = [full_optimizer_state(self.model, state)
                                              for state in checkpoint["optimizer_states"]]


def _sum_over(value: torch.Tensor, group) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, group=group)
    return value
