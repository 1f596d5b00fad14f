"""Training on a CUDA stream of its own, so that the DALI batches handed to it are ordered, not host-synchronous.

The loader asks DALI to bind each batch to the stream training runs on (``torch.cuda.current_stream()``): DALI
then makes that stream wait for the batch's kernels, and the host does not wait at all. On PyTorch's default
stream that handle is 0, the legacy default stream, which a CUDA library may equally read as "no stream" and
answer by synchronising the host (DALI's documentation does not say which it does). A stream of our own has a
handle no one can misread. It is a non-blocking stream from PyTorch's pool, so it does not serialise with work
that other libraries queue on the legacy default stream either.
"""

import lightning as L
import torch


class TrainingStream(L.Callback):
    """Run fit (training and validation) on a fresh CUDA stream of the training device, ordered after everything
    queued before it (the weights' copy to the device, a resumed state) and before everything after it."""

    def __init__(self) -> None:
        self._stream: torch.cuda.Stream | None = None
        self._before: torch.cuda.Stream | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        device = pl_module.device
        if device.type != "cuda":
            return
        self._before = torch.cuda.current_stream(device)
        self._stream = torch.cuda.Stream(device)
        self._stream.wait_stream(self._before)
        torch.cuda.set_stream(self._stream)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._stream is None:
            return
        self._before.wait_stream(self._stream)
        torch.cuda.set_stream(self._before)
        self._stream = self._before = None
