"""What a resumed run must put back that Lightning's restore does not, so that it goes on as the
uninterrupted run would have (tests/training/test_resume.py compares the two weight for weight):

- the global random states at the save (the dropout masks draw from torch's), kept in every checkpoint;
- the recipe's lr and weight decay, which the restored optimizer state overrides with the saved run's;
- the plateau scheduler's step for the epoch the save fell in: Lightning steps ReduceLROnPlateau only
  with the epoch's metric at hand, which the checkpoint lacks, so every checkpoint keeps the val metrics
  of its save and the resumed run steps the scheduler with them;
- the cosine schedule's length, when the resume changed ``trainer.max_epochs``;
- optimizer states written before weights and biases were two parameter groups.
"""

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from alexnet_cli.models.checkpoint_meta import META_KEY, CheckpointMeta
from alexnet_cli.training import rng
from alexnet_cli.training.optimizer import apply_weight_decay, split_single_group

RNG_KEY, MONITORS_KEY = "alexnet_cli_rng", "alexnet_cli_monitors"


class ResumeRepair(L.Callback):
    """On every save: the random states and the val metrics. On a resume: everything listed above. ``say``
    hears the one line a re-planned schedule is worth (rank 0)."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say or (lambda line: None)
        self._resumed_rng: dict[str, Any] | None = None
        self._lr_changed = False
        self._saved_monitors: dict[str, float] | None = None  # on resume: the val metrics at the save

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng.capture()
        checkpoint[MONITORS_KEY] = {key: float(value) for key, value in trainer.callback_metrics.items()
                                    if key.startswith("val/")}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("optimizer_states") or []
        if states and len(states[0]["param_groups"]) == 1:  # written before weights and biases were grouped
            names = [name for name, _ in pl_module.model.named_parameters()]
            checkpoint["optimizer_states"] = [split_single_group(state, names) for state in states]
        self._resumed_rng = checkpoint.get(RNG_KEY)
        self._saved_monitors = checkpoint.get(MONITORS_KEY, {})
        saved_recipe = CheckpointMeta.from_dict(checkpoint[META_KEY]).recipe or {}  # resume checked it's there
        saved_optim = saved_recipe.get("optim", {})
        self._lr_changed = any(saved_optim.get(key) != getattr(pl_module.optim, key)
                               for key in ("lr", "reference_batch"))

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if self._saved_monitors is None:
            return  # a new run: the optimizer and schedulers are as configure_optimizers made them
        if self._resumed_rng is not None:
            rng.restore(self._resumed_rng)  # dropout goes on where the saved run was, not where init left it
            self._resumed_rng = None
        if self._lr_changed:
            _apply_lr(trainer, pl_module.learning_rate())
        for optimizer in trainer.optimizers:
            apply_weight_decay(optimizer, pl_module.optim)
        if not trainer.fit_loop.restarting:  # saved at an epoch's end, between its validation and plateau step
            self._step_plateau_schedulers(trainer, lambda scheduler: trainer.current_epoch - scheduler.last_epoch == 1)
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                self._replan_cosine(trainer, config.scheduler)

    def _replan_cosine(self, trainer: L.Trainer, scheduler: torch.optim.lr_scheduler.CosineAnnealingLR) -> None:
        """Over the resumed run's trainer.max_epochs: each epoch from here gets the lr it would have had in a
        run planned that long from the start (the closed form), not the old curve's tail continued."""
        planned, scheduler.T_max = scheduler.T_max, max(1, trainer.max_epochs or 1)
        lrs = [scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * scheduler.last_epoch /
                                                                              scheduler.T_max)) / 2
               for base in scheduler.base_lrs]
        for group, lr in zip(scheduler.optimizer.param_groups, lrs):
            group["lr"] = lr
        scheduler._last_lr = lrs
        if planned != scheduler.T_max and trainer.is_global_zero:
            self.say(f"cosine schedule re-planned over {scheduler.T_max} epochs (was {planned}): epoch "
                     f"{scheduler.last_epoch + 1} resumes at lr {lrs[0]:.3g}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._saved_monitors is not None and trainer.fit_loop.restarting:  # resumed mid-epoch
            self._step_plateau_schedulers(trainer, lambda scheduler: True)
        self._saved_monitors = None

    def _step_plateau_schedulers(self, trainer: L.Trainer, needed) -> None:
        """With the epoch's metric as measured by this process, or else as saved in the checkpoint."""
        saved = self._saved_monitors or {}
        for config in trainer.lr_scheduler_configs:
            if config.reduce_on_plateau and config.interval == "epoch" and needed(config.scheduler):
                value = trainer.callback_metrics.get(config.monitor, saved.get(config.monitor))
                if value is not None:
                    config.scheduler.step(float(value))


def _apply_lr(trainer: L.Trainer, lr: float) -> None:
    """The recipe's new lr from the resumed step on; the schedule continues from it."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = lr
    for config in trainer.lr_scheduler_configs:
        if hasattr(config.scheduler, "base_lrs"):
            config.scheduler.base_lrs = [lr] * len(config.scheduler.base_lrs)
