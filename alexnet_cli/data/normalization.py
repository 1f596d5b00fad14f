"""The input normalisation, stated once: the DALI graph applies it (``pipelines``); outside the graph
(``predict``, the benchmark's torchvision twin) ``Normalization.in_torch()`` applies the same to tensors."""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalization:
    """Subtract ``channel_mean`` and divide by ``channel_std`` (0–255 units), or, in the paper's
    way (§2), subtract a per-pixel ``mean_image`` of the stored size and divide by nothing."""

    channel_mean: np.ndarray
    channel_std: np.ndarray
    mean_image: np.ndarray | None = None

    def in_torch(self) -> "TorchNormalization":
        return TorchNormalization(self)

    def to_dict(self) -> dict:
        """As a checkpoint stores it (``models/checkpoint_meta``): lists of floats, the mean image a tensor."""
        stored = {"mode": "channel" if self.mean_image is None else "image",
                  "channel_mean": [float(v) for v in self.channel_mean],
                  "channel_std": [float(v) for v in self.channel_std]}
        if self.mean_image is not None:
            stored["mean_image"] = torch.as_tensor(self.mean_image)
        return stored

    @classmethod
    def from_dict(cls, stored: dict) -> "Normalization":
        """``to_dict``'s form; ``mode`` is implied by the mean image's presence."""
        mean_image = stored.get("mean_image")
        return cls(np.asarray(stored["channel_mean"]), np.asarray(stored["channel_std"]),
                   None if mean_image is None else np.asarray(mean_image))


class TorchNormalization:
    """``Normalization`` for CHW float tensors in 0–255; its constants converted once."""

    def __init__(self, normalization: Normalization) -> None:
        mean_image = normalization.mean_image
        self.mean_image = None if mean_image is None else torch.as_tensor(mean_image).permute(2, 0, 1).float()
        self.mean = torch.as_tensor(normalization.channel_mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(normalization.channel_std, dtype=torch.float32)[:, None, None]

    def __call__(self, pixels: torch.Tensor, x: int, y: int) -> torch.Tensor:
        """``pixels``: a crop; (x, y): where its top-left corner sits in the stored-size image, hence in the
        mean image, whose same crop is subtracted (the graph does it likewise, before any mirroring)."""
        if self.mean_image is None:
            return (pixels - self.mean) / self.std
        height, width = pixels.shape[-2:]
        return pixels - self.mean_image[:, y : y + height, x : x + width]

    def centre(self, pixels: torch.Tensor) -> torch.Tensor:
        """A centre crop of an image at the stored size: the mean image's centre crop subtracted."""
        if self.mean_image is None:
            return self(pixels, 0, 0)
        side_y, side_x = self.mean_image.shape[-2:]
        height, width = pixels.shape[-2:]
        return self(pixels, int(round((side_x - width) / 2.0)), int(round((side_y - height) / 2.0)))
