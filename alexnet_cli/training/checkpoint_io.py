"""Checkpoint files that are whole or absent: a run killed while saving keeps the previous one.

Lightning's own writer serialises into memory, then writes the final path in place
(or moves a temporary file from another filesystem), so a kill at the wrong moment
leaves a truncated ``last.ckpt``. This one writes a hidden sibling, fsyncs it and
renames it over the old file.
"""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from alexnet_cli.atomic import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomic(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def remove_unfinished(directory: Path) -> list[Path]:
    """Delete the temporary files of saves that a killed run never finished (each as big as a checkpoint)."""
    leftovers = sorted(Path(directory).glob(".*.ckpt.*.tmp"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
