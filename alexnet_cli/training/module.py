"""The LightningModule: cross-entropy, the paper's SGD (§5), top-1/top-5 metrics."""

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from alexnet_cli.data.feed import SKIPPED
from alexnet_cli.models.checkpoint_meta import META_KEY
from alexnet_cli.models.execution import CompileOptions, compile_in_place, match_state_layouts, prepare_lrn
from alexnet_cli.parallel.ranks import RunningLayout, running_layout
from alexnet_cli.recipes import OptimConfig
from alexnet_cli.training.optimizer import sgd, zero_momentum_buffers


class AlexNetModule(L.LightningModule):
    """Trains any network of the zoo. ``meta`` is stored in every checkpoint (see ``checkpoints``).

    Whatever depends on how the devices share the network (whose labels the scores are, which ranks
    reduce the metrics, the data-parallel size) it asks the running layout (``parallel.ranks``); what
    the layout does after each backward is its strategy's own hook.
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, *, num_classes: int, meta: dict[str, Any],
                 batch_size: int = 128, compile: CompileOptions | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.model = model
        self.say = say or (lambda line: None)  # what the run says before its first step (rank 0's lines only)
        self.compile_options = compile  # applied at fit start, to the layout the strategy leaves
        self.optim = optim
        self.meta = meta
        self.batch_size = batch_size  # per data-parallel rank
        # Device-side record of the first non-finite loss: reading it every step would stall a GPU.
        self.first_nonfinite_step: torch.Tensor | None = None
        self.first_nonfinite_loss: torch.Tensor | None = None
        self._step_loss: torch.Tensor | None = None
        top5 = min(5, num_classes)
        # Validation samples whose file could not be used carry the label SKIPPED: scored by nothing.
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro", ignore_index=SKIPPED)
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro", ignore_index=SKIPPED)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, self._layout().scored_labels(labels))
        self._step_loss = loss.detach()
        # Not prog_bar=True: Lightning would copy it to the host after every batch for the bar (a GPU sync);
        # SparseMetricsProgressBar shows it every few steps instead.
        self.log("train/loss", loss)
        return loss

    def _layout(self) -> RunningLayout:
        return running_layout(self._trainer)

    def on_before_optimizer_step(self, optimizer) -> None:
        bad = self._nonfinite_update()
        zero_momentum_buffers(optimizer)
        # The fused SGD kernel leaves weights and momentum untouched where found_inf is 1: a bad loss never
        # updates the weights, and nothing waits for the GPU to find out.
        optimizer.found_inf = bad.float()
        if self.optim.log_grad_norm:
            self.log("train/grad_norm", self._gradient_norm())

    def _nonfinite_update(self) -> torch.Tensor:
        """Whether this step's loss or gradient is NaN/inf, as a device tensor, and a device-side record of
        the first such step that ``StopOnNonFiniteLoss`` reads when the loop syncs anyway. The gradient
        counts too: under DDP a NaN on one rank reaches every rank only through the averaged gradient."""
        loss = self._step_loss
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        bad = ~torch.isfinite(loss)
        loss_scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        if grads and not loss_scaled:  # fp16's scaler skips overflowing steps itself; they are no error
            bad = bad | ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
        if self.first_nonfinite_step is None or self.first_nonfinite_step.device != loss.device:
            self.first_nonfinite_step = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self.first_nonfinite_loss = torch.zeros((), device=loss.device)
        first = bad & (self.first_nonfinite_step < 0)
        self.first_nonfinite_step = torch.where(first, self.global_step, self.first_nonfinite_step)
        self.first_nonfinite_loss = torch.where(first, loss.float(), self.first_nonfinite_loss)
        return bad

    def _gradient_norm(self) -> torch.Tensor:
        """The 2-norm of the whole network's gradient (summed over both towers under the split)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        squared = torch.nn.utils.get_total_norm(grads).square() if grads else torch.zeros((), device=self.device)
        pair = self._layout().tensor_parallel_group
        if pair is not None:
            squared = _sum_over(squared, pair)
        return squared.sqrt()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        labels = self._layout().scored_labels(labels)
        # Sum, not mean: with short last batches and uneven shards only a sum weights every image once.
        loss_sum = F.cross_entropy(logits, labels, reduction="sum", ignore_index=SKIPPED)
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        self._val_loss_sum += loss_sum.detach()
        self._val_count += (labels != SKIPPED).sum()

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum = torch.zeros((), device=self.device)
        self._val_count = torch.zeros((), device=self.device)

    def on_fit_start(self) -> None:
        # Metrics reduce over data-parallel ranks only: the two towers of a pair score the same images.
        group = self._layout().data_parallel_group
        self.val_top1.process_group = self.val_top5.process_group = group
        notes = prepare_lrn(self.model, self.device)  # on the device it trains on, before anything compiles
        if self.trainer.is_global_zero:
            for note in notes:
                self.say(note)
        if self.compile_options is not None:  # before the sanity check's validation: it runs compiled too
            compile_in_place(self.model, self.compile_options)

    def on_train_start(self) -> None:
        # After Lightning restored a resume's optimizer state (on_fit_start comes before that): a state saved
        # contiguous meets channels-last weights when a resume turns model.channels_last on.
        for optimizer in self.trainer.optimizers:
            match_state_layouts(optimizer)

    def on_validation_epoch_end(self) -> None:
        group = self._layout().data_parallel_group
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
        world = self._layout().data_parallel_shard()[1]
        return cfg.lr * self.batch_size * world / cfg.reference_batch

    def configure_optimizers(self) -> dict:
        cfg = self.optim
        optimizer = sgd(self.model, cfg, self.learning_rate())
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
        checkpoint[META_KEY] = self.meta  # the tool's record (models/checkpoints); a resume's: ResumeRepair


def _sum_over(value: torch.Tensor, group) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, group=group)
    return value
