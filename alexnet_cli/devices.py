"""The tool's two device names, ``cpu`` and ``gpu``, as torch devices, and the one check that a GPU asked
for is there (recipes say ``data.device: gpu``; commands say ``--device gpu``)."""

from typing import Literal

import torch

from alexnet_cli.errors import AlexnetError

DeviceName = Literal["cpu", "gpu"]


def torch_device(device: DeviceName, index: int = 0) -> torch.device:
    """Where the tensors of ``device`` live: CUDA device ``index``, or the CPU."""
    return torch.device("cuda", index) if device == "gpu" else torch.device("cpu")


def gpu_present() -> bool:
    return torch.cuda.is_available()


def require_gpu(asked_by: str, instead: str) -> None:
    """Refuse what ``asked_by`` (the option as the user wrote it, e.g. ``--device gpu``) asks on a machine
    without a CUDA GPU, saying what to use ``instead``."""
    if not gpu_present():
        raise AlexnetError(f"{asked_by}: this machine has no CUDA GPU; {instead}")


def accelerator_is_gpu(accelerator: str) -> bool:
    """Whether Lightning's ``trainer.accelerator`` runs on a CUDA GPU here (``auto`` does where one is present)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpu_present())


def dali_device_id(device: DeviceName, index: int = 0) -> int | None:
    """A DALI pipeline's ``device_id``: the GPU's index, or None for a CPU-only pipeline (which then needs no
    CUDA at all)."""
    return index if device == "gpu" else None
