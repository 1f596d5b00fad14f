"""The dataset statistics the paper's preprocessing needs (§2, §4.1).

Pixel statistics are in 0–255 units. The RGB covariance is computed on values
scaled to [0, 1], as in every public reproduction, so that the PCA shift
Σ αᵢ λᵢ pᵢ with α ~ N(0, 0.1²) moves pixels by a few levels; the pipeline
multiplies the shift by 255.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_cli.atomic import write_atomic
from alexnet_cli.data.dataset_files import read_dataset_info
from alexnet_cli.errors import AlexnetError

# ImageNet's published values, used when a dataset has no stats.npz:
# channel mean/std as torchvision uses them (×255), and the eigen decomposition of
# the RGB covariance from fb.resnet.torch (values in [0, 1]).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)  # columns are the eigenvectors


@dataclass
class DatasetStats:
    channel_mean: np.ndarray  # (3,), 0–255
    channel_std: np.ndarray  # (3,), 0–255
    eigval: np.ndarray  # (3,), covariance of RGB in [0, 1], descending
    eigvec: np.ndarray  # (3, 3), column i belongs to eigval[i]
    mean_image: np.ndarray | None  # (H, W, 3) float32, 0–255; only for square datasets
    images: int = 0

    @classmethod
    def imagenet_defaults(cls) -> "DatasetStats":
        return cls(IMAGENET_MEAN, IMAGENET_STD, IMAGENET_EIGVAL, IMAGENET_EIGVEC, None)

    def save(self, path: Path) -> None:
        arrays = {
            "channel_mean": self.channel_mean, "channel_std": self.channel_std,
            "eigval": self.eigval, "eigvec": self.eigvec, "images": np.array(self.images),
        }
        if self.mean_image is not None:
            arrays["mean_image"] = self.mean_image.astype(np.float32)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> "DatasetStats":
        try:
            with np.load(path) as data:
                mean_image = data["mean_image"] if "mean_image" in data else None
                return cls(data["channel_mean"], data["channel_std"], data["eigval"], data["eigvec"],
                           mean_image, int(data["images"]))
        except FileNotFoundError:
            raise AlexnetError(f"{path} not found: the dataset has no statistics (mean image, RGB PCA), which "
                               "training normalises with; prepare the dataset again") from None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise AlexnetError(f"{path} is not a valid statistics file ({exc}); prepare the dataset again") from None


class StatsAccumulator:
    """Exact running sums over uint8 RGB images; partial sums from workers add up."""

    def __init__(self, image_shape: tuple[int, int] | None) -> None:
        self.image_sum = np.zeros((*image_shape, 3), np.uint64) if image_shape else None
        self.pixel_sum = np.zeros(3, np.float64)
        self.outer_sum = np.zeros((3, 3), np.float64)
        self.pixels = 0
        self.images = 0

    def add(self, rgb: np.ndarray) -> None:
        if self.image_sum is not None and rgb.shape == self.image_sum.shape:
            self.image_sum += rgb
        flat = rgb.reshape(-1, 3).astype(np.float64)
        self.pixel_sum += flat.sum(0)
        self.outer_sum += flat.T @ flat
        self.pixels += flat.shape[0]
        self.images += 1

    def merge(self, other: "StatsAccumulator") -> None:
        if self.image_sum is not None and other.image_sum is not None:
            self.image_sum += other.image_sum
        self.pixel_sum += other.pixel_sum
        self.outer_sum += other.outer_sum
        self.pixels += other.pixels
        self.images += other.images

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"pixel_sum": self.pixel_sum, "outer_sum": self.outer_sum,
                  "pixels": np.array(self.pixels), "images": np.array(self.images)}
        if self.image_sum is not None:
            arrays["image_sum"] = self.image_sum
        return arrays

    @classmethod
    def from_arrays(cls, data) -> "StatsAccumulator":
        acc = cls(None)
        acc.image_sum = data["image_sum"] if "image_sum" in data else None
        acc.pixel_sum, acc.outer_sum = data["pixel_sum"], data["outer_sum"]
        acc.pixels, acc.images = int(data["pixels"]), int(data["images"])
        return acc

    def finish(self) -> DatasetStats:
        if self.pixels == 0:
            raise AlexnetError("no training images were read, so no statistics can be computed")
        mean = self.pixel_sum / self.pixels
        covariance = self.outer_sum / self.pixels - np.outer(mean, mean)
        std = np.sqrt(np.diag(covariance))
        eigval, eigvec = np.linalg.eigh(covariance / 255.0**2)
        order = np.argsort(eigval)[::-1]
        mean_image = None
        if self.image_sum is not None and self.images:
            mean_image = (self.image_sum / self.images).astype(np.float32)
        return DatasetStats(mean, std, eigval[order], eigvec[:, order], mean_image, self.images)


def load_stats(root: Path) -> DatasetStats:
    """The dataset's own statistics (``stats.npz``, written by prepare-imagenet); a one-line error
    naming it if it is missing, damaged or implausible: training normalises and colour-augments with them."""
    path = Path(root) / "stats.npz"
    stats = DatasetStats.load(path)
    check_stats(stats, path, read_dataset_info(Path(root)))
    return stats


# Pixel data bounds every field: 0–255 values have a standard deviation of at most 127.5, and RGB in
# [0, 1] a covariance whose eigenvalues sum (its trace) to at most 3 × 0.25. eigh returns tiny negative
# eigenvalues (~-1e-17) for a rank-deficient covariance, a greyscale dataset's: those are zero.
_EIGVAL_TOLERANCE = 1e-6


def check_stats(stats: DatasetStats, path: Path, info: dict) -> None:
    """Refuse statistics no pixel data could give, naming ``path`` and the field: a zero std or a NaN
    trains on NaN, a wrong-shape mean image fails deep inside DALI, the rest trains on garbage."""
    side = info.get("size") if info.get("mode") == "paper" else None
    fields = {
        "channel_mean": (stats.channel_mean, (3,), (0.0, 255.0), "0–255"),
        "channel_std": (stats.channel_std, (3,), (np.nextafter(0.0, 1.0), 127.5), "above 0 and at most 127.5"),
        "eigval": (stats.eigval, (3,), (-_EIGVAL_TOLERANCE, 0.75), "0–0.75 (variances of RGB in [0, 1])"),
        "eigvec": (stats.eigvec, (3, 3), (-1.0 - 1e-6, 1.0 + 1e-6), "in [-1, 1]"),
    }
    if stats.mean_image is not None:
        shape = (side, side, 3) if side else (stats.mean_image.shape[:2] + (3,))[:3]
        fields["mean_image"] = (stats.mean_image, shape, (0.0, 255.0), "0–255")
    for name, (values, shape, (low, high), words) in fields.items():
        values = np.asarray(values)
        if values.shape != shape:
            expected = "×".join(map(str, shape))
            because = f" (dataset.json: {side}×{side} images)" if name == "mean_image" and side else ""
            raise AlexnetError(f"{path}: {name} has shape {'×'.join(map(str, values.shape)) or 'scalar'}, "
                               f"not {expected}{because}; prepare the dataset again")
        if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
            raise AlexnetError(f"{path}: {name} holds values that are not finite numbers; prepare the dataset again")
        if values.min() < low or values.max() > high:
            bad = values.min() if values.min() < low else values.max()
            raise AlexnetError(f"{path}: {name} holds {float(bad):g}, which pixel data cannot give (it must be "
                               f"{words}); prepare the dataset again")
    lengths = np.linalg.norm(np.asarray(stats.eigvec, np.float64), axis=0)
    if np.abs(lengths - 1).max() > 1e-3:  # columns are eigenvectors: unit length, whatever the data
        raise AlexnetError(f"{path}: eigvec's columns have lengths {np.round(lengths, 3).tolist()}, not 1 (they are "
                           "eigenvectors); prepare the dataset again")
