"""Training on a CUDA stream of its own, so that the DALI batches handed to it are ordered, not host-synchronous.

The loader asks DALI to bind each batch to the stream training runs on (``torch.cuda.current_stream()``): DALI
then makes that stream wait for the batch's kernels, and the host does not wait at all. On PyTorch's default
stream that handle is 0, the legacy default stream, which a CUDA library may equally read as "no stream" and
answer by synchronising the host (DALI's documentation does not say which it does). A stream of our own has a
handle no one can misread. It is a non-blocking stream from PyTorch's pool, so it does not serialise with work
that other libraries queue on the legacy default stream either.
"""

import contextlib
from collections.abc import Iterator

import lightning as L
import torch


class OwnStream:
    """A fresh stream of ``device`` made current, ordered after everything queued on the stream it replaces (the
    weights' copy to the device, the optimizer's set-up), and that stream ordered after it when it ends."""

    def __init__(self, device: torch.device) -> None:
        self._before = torch.cuda.current_stream(device)
        self.stream = torch.cuda.Stream(device)
        self.stream.wait_stream(self._before)
        torch.cuda.set_stream(self.stream)

    def end(self) -> None:
        self._before.wait_stream(self.stream)
        torch.cuda.set_stream(self._before)


@contextlib.contextmanager
def own_stream(device: torch.device) -> Iterator[None]:
    """``OwnStream`` for a block (a benchmark's plain loop); nothing off CUDA."""
    if device.type != "cuda":
        yield
        return
    stream = OwnStream(device)
    try:
        yield
    finally:
        stream.end()


class TrainingStream(L.Callback):
    """Run fit on ``OwnStream``: from the start of fit (before a resumed optimizer state is restored, which then
    lands on this stream too) to its end, training and validation alike."""

    def __init__(self) -> None:
        self._own: OwnStream | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            self._own = OwnStream(pl_module.device)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._own is not None:
            self._own.end()
            self._own = None
