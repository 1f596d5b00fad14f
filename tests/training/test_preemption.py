"""GracefulStop on one process: which signal asks for a stop, how Ctrl-C twice differs from once, whose handlers
it leaves alone and gives back, and what a stopped fit saves.

Real signals to this process: the handlers run in it, on the main thread, before the next line. The ranks'
agreement on a stop (several processes) is tested through ``alexnet train`` in tests/parallel and
tests/training/test_resume.py.
"""

import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from alexnet_cli.training.preemption import GracefulStop, StopNow

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _before_the_fit(signum, frame) -> None:
    """What this process did with a signal before a fit: anything but ending the test run."""


BEFORE = [_before_the_fit, _before_the_fit, signal.SIG_DFL]  # for HANDLED, in order


def _handlers() -> list:
    return [signal.getsignal(signum) for signum in HANDLED]


@pytest.fixture
def handlers_before():
    """The three signals answered by ``_before_the_fit`` (SIGUSR1 left at its default, as on a laptop), the
    test's own handlers given back afterwards whatever happened."""
    saved = _handlers()
    for signum, handler in zip(HANDLED, BEFORE, strict=True):
        signal.signal(signum, handler)
    yield
    for signum, handler in zip(HANDLED, saved, strict=True):
        signal.signal(signum, handler)


def _trainer(tmp_path, **options) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **options)


def _started(tmp_path) -> tuple[GracefulStop, L.Trainer]:
    """A GracefulStop as a fit on one process has started it."""
    stop, trainer = GracefulStop(tmp_path / "last.ckpt"), _trainer(tmp_path)
    stop.on_train_start(trainer, None)
    return stop, trainer


def test_sigterm_asks_lightning_to_stop_after_the_step_and_is_named_sigterm(handlers_before, tmp_path):
    stop, trainer = _started(tmp_path)
    assert not trainer.received_sigterm
    signal.raise_signal(signal.SIGTERM)
    assert trainer.received_sigterm and stop.signal is None and stop.signal_name == "SIGTERM"


def test_sigusr1_stops_as_sigterm_does_and_is_named_as_itself(handlers_before, tmp_path):
    stop, trainer = _started(tmp_path)
    assert signal.getsignal(signal.SIGUSR1) == stop._as_sigterm  # else the signal's default ends the test run
    signal.raise_signal(signal.SIGUSR1)
    assert trainer.received_sigterm and stop.signal_name == "SIGUSR1"


def test_a_first_ctrl_c_finishes_the_step_and_says_how_to_stop_at_once(handlers_before, tmp_path, capsys):
    stop, trainer = _started(tmp_path)
    signal.raise_signal(signal.SIGINT)
    assert trainer.received_sigterm and stop.signal_name == "SIGINT"
    assert capsys.readouterr().err == "\nCtrl-C: finishing this step and saving (press Ctrl-C again to stop at once)\n"


def test_a_second_ctrl_c_stops_at_once(handlers_before, tmp_path):
    _started(tmp_path)
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(StopNow):
        signal.raise_signal(signal.SIGINT)


def test_a_second_ctrl_c_after_a_sigusr1_also_stops_at_once(handlers_before, tmp_path):
    stop, _ = _started(tmp_path)
    signal.raise_signal(signal.SIGUSR1)
    with pytest.raises(StopNow):
        signal.raise_signal(signal.SIGINT)
    assert stop.signal_name == "SIGUSR1"  # the stop was SIGUSR1's: the message names the first request


def test_a_ctrl_c_on_a_rank_other_than_zero_stops_without_a_word(handlers_before, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    _, trainer = _started(tmp_path)
    signal.raise_signal(signal.SIGINT)
    assert trainer.received_sigterm and capsys.readouterr().err == ""


def test_sigusr1_is_left_to_a_handler_already_there(handlers_before, tmp_path):
    def requeue(signum, frame) -> None:  # Lightning's SLURM auto-requeue, say
        pass

    signal.signal(signal.SIGUSR1, requeue)
    stop, _ = _started(tmp_path)
    assert signal.getsignal(signal.SIGUSR1) is requeue
    assert signal.getsignal(signal.SIGTERM) == stop._sigterm and signal.getsignal(signal.SIGINT) == stop._interrupt


def test_the_handlers_from_before_the_fit_come_back_at_teardown(handlers_before, tmp_path):
    stop, trainer = _started(tmp_path)
    assert _handlers() == [stop._sigterm, stop._interrupt, stop._as_sigterm]
    stop.teardown(trainer, None, "fit")
    assert _handlers() == BEFORE


def test_an_exception_other_than_a_stop_gives_the_handlers_back_and_saves_nothing(handlers_before, tmp_path):
    stop, trainer = _started(tmp_path)
    stop.on_exception(trainer, None, RuntimeError("a failing step"))
    assert _handlers() == BEFORE and stop.saved_step is None and not (tmp_path / "last.ckpt").exists()


class _SignalledAt(L.LightningModule):
    """A one-layer regression that sends this process ``signum`` during step number ``step`` (from 1)."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.signum, self.step = signum, step

    def training_step(self, batch, batch_idx):
        if self.global_step + 1 == self.step:
            signal.raise_signal(self.signum)
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.layer(inputs).squeeze(1), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(40, 3), torch.randn(40))
        return torch.utils.data.DataLoader(data, batch_size=4)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=lambda signum: signum.name)
def test_a_stop_requested_in_a_step_ends_the_fit_after_it_and_saves_what_a_resume_needs(handlers_before, tmp_path,
                                                                                        signum):
    stop = GracefulStop(tmp_path / "stopped" / "last.ckpt")
    trainer = _trainer(tmp_path, max_steps=8, callbacks=[stop])
    with pytest.raises(SIGTERMException):
        trainer.fit(_SignalledAt(signum, step=3))
    assert trainer.global_step == stop.saved_step == 3
    saved = torch.load(tmp_path / "stopped" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 3 and saved["optimizer_states"][0]["state"]  # the momentum, for the resume
    assert _handlers() == BEFORE
