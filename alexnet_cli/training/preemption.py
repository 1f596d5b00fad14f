"""Stopping on request without losing the run: SIGTERM, SIGUSR1 and Ctrl-C each finish the step
under way, save ``last.ckpt`` and end the run with a message that says how to resume.

SIGUSR1 (SLURM's warning before preemption) and a first Ctrl-C are turned into SIGTERM; a
second Ctrl-C stops at once. Under SLURM with auto-requeue, Lightning keeps its own SIGUSR1
handler, which saves and requeues the job.

SIGTERM itself is handled here, not by Lightning 2.6: its handler broadcasts from inside the
signal handler and forwards the signal to the other ranks, whose handlers broadcast again, which
deadlocks a run whose ranks meet in collectives every step (the weird-trick layout; DDP at
the wrong moment). Here a signal only marks a stop as requested; on one process the step ends
and the run stops; on several, the ranks agree at the next logging step (one all-reduce of a
flag, where the loop syncs anyway) and all stop after that same step, then save together.
"""

import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException


class StopNow(BaseException):
    """A second Ctrl-C: leave the step under way at once. Not a KeyboardInterrupt, which Lightning
    turns into exit code 1 and a message of its own; ``train`` turns this into 130 and says what is saved."""


class GracefulStop(L.Callback):
    """Installs the handlers for the fit and saves ``checkpoint`` when a signal stopped it."""

    def __init__(self, checkpoint: Path, every_n_steps: int = 1) -> None:
        self.checkpoint = Path(checkpoint)
        self.every_n_steps = max(1, every_n_steps)  # how often ranks agree on a requested stop
        self.signal: int | None = None  # the first stop request (None: SIGTERM through Lightning)
        self.saved_step: int | None = None
        self._previous: dict[int, object] = {}
        self._requested = False
        self._trainer = None

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning registered its handlers (it skips SIGUSR1 if one is already set).
        self._trainer = trainer
        self._install(signal.SIGTERM, self._sigterm)
        self._install(signal.SIGINT, self._interrupt)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
            self._install(signal.SIGUSR1, self._as_sigterm)

    def _sigterm(self, signum, frame) -> None:
        self._requested = True
        if self._trainer is not None and self._trainer.world_size == 1:
            self._trainer._signal_connector.received_sigterm = True  # Lightning stops after this step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size == 1 or trainer.global_step % self.every_n_steps:
            return
        flag = torch.tensor([float(self._requested)], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():  # every rank, after the same step
            trainer._signal_connector.received_sigterm = True


    def _install(self, signum: int, handler) -> None:
        self._previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)

    def _as_sigterm(self, signum, frame) -> None:
        if self.signal is None:
            self.signal = signum
        os.kill(os.getpid(), signal.SIGTERM)

    def _interrupt(self, signum, frame) -> None:
        if self.signal is not None:
            raise StopNow  # second Ctrl-C: stop now, keep the checkpoints already written
        if trainer_is_rank_zero():
            print("\nCtrl-C: finishing this step and saving (press Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)
        self._as_sigterm(signum, frame)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # all a resume needs
            self.saved_step = trainer.global_step
        self._restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal or signal.SIGTERM).name


def trainer_is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0
