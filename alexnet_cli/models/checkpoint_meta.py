"""What a checkpoint says about itself (``checkpoint["alexnet_cli"]``): written and read here only.

The stored form is a plain dict (``to_dict``), so that ``torch.load(weights_only=True)`` reads it. Its formats:

    1  the first release: version, arch, num_classes, dropout, fc_width, crop, resize_size, classes, recipe,
       normalization {mode, channel_mean, channel_std, mean_image (a tensor, mode image only)}
    2  + lrn, overlap_pool (the paper's ablations, §3.3 and §3.4)
    3  + format (this number), source (set where the weights did not come from 'alexnet train')

Neither 1 nor 2 wrote a number: a record without one is 2 if it has ``lrn``, else 1. Fixtures of each are in
tests/models/meta_formats/. Records written by hand (tests, scripts) may hold only arch, num_classes,
classes and crop; the rest take their defaults.
"""

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from alexnet_cli.data.dataset_files import ClassInfo
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.stats import IMAGENET_MEAN, IMAGENET_STD
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.build import ARCH_OPTIONS, ARCHS
from alexnet_cli.recipes import ModelConfig

META_KEY = "alexnet_cli"  # where a checkpoint keeps its record: checkpoint[META_KEY]
FORMAT = 3  # what to_dict writes; from_dict reads every format up to it
_REQUIRED = ("arch", "num_classes", "classes", "crop")


@dataclass(frozen=True)
class InputFormat:
    """How an image becomes the network's input: evaluation, predict and neighbors feed a checkpoint so."""

    crop: int
    resize_size: int = 256  # shorter side before cropping (§2)
    normalization: Normalization | None = None  # None only in a record written by hand

    def input_normalization(self) -> Normalization:
        if self.normalization is None:
            raise AlexnetError("the checkpoint records no input normalisation: it was not written by "
                               "'alexnet train'; train one, or give torchvision weights with --weights")
        return self.normalization

    def to_dict(self) -> dict[str, Any]:
        return {"crop": self.crop, "resize_size": self.resize_size,
                "normalization": None if self.normalization is None else self.normalization.to_dict()}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> "InputFormat":
        """The input keys of a stored record (crop, resize_size, normalization), the others ignored."""
        normalization = stored.get("normalization")
        return cls(int(stored["crop"]), int(stored.get("resize_size", 256)),
                   None if normalization is None else Normalization.from_dict(normalization))


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's record of its network, classes and input: enough to evaluate it without the recipe or
    dataset, and to check a resume against them."""

    arch: str
    num_classes: int
    classes: list[ClassInfo]
    input: InputFormat
    dropout: float | None = None  # None: the arch's own
    arch_options: dict[str, Any] = field(default_factory=lambda: dict(ARCH_OPTIONS))  # ModelConfig's arch options
    recipe: dict[str, Any] | None = None  # the run's recipe (Recipe.to_dict()); None: not a training run's
    version: str | None = None  # the tool's version that wrote it
    source: str | None = None  # where the weights came from, when not from 'alexnet train'
    dataset_fingerprint: str | None = None  # data.fingerprint of the training set; None: unknown (older data)

    @property
    def wnids(self) -> list[str]:
        return [c.wnid for c in self.classes]

    def model_config(self) -> ModelConfig:
        """The recipe ``model`` section that rebuilds this checkpoint's network (``models.build_network``), its
        weights left as the builder made them: the checkpoint's come next."""
        return ModelConfig(arch=self.arch, num_classes=self.num_classes, dropout=self.dropout, init="builder",
                           **self.arch_options)

    @classmethod
    def of_run(cls, model: ModelConfig, recipe: dict[str, Any], *, num_classes: int, classes: list[ClassInfo],
               crop: int, resize_size: int, normalization: Normalization, version: str,
               dataset_fingerprint: str | None = None) -> "CheckpointMeta":
        """What a training run writes into each checkpoint."""
        options = {option: getattr(model, option) for option in ARCH_OPTIONS}
        return cls(model.arch, num_classes, list(classes), InputFormat(crop, resize_size, normalization),
                   model.dropout, options, recipe, version, dataset_fingerprint=dataset_fingerprint)

    @classmethod
    def of_torchvision(cls, num_classes: int, classes: list[ClassInfo]) -> "CheckpointMeta":
        """A torchvision ``alexnet`` state dict's: the ``owt`` arch, torchvision's normalisation, 224 crops."""
        return cls("owt", num_classes, list(classes), InputFormat(224, 256, Normalization(IMAGENET_MEAN, IMAGENET_STD)),
                   source="torchvision weights")

    def to_dict(self) -> dict[str, Any]:
        """The stored form (format ``FORMAT``): plain values and, for a mean image, one tensor."""
        return {
            "format": FORMAT, "version": self.version, "arch": self.arch, "num_classes": self.num_classes,
            "dropout": self.dropout, **self.arch_options, **self.input.to_dict(),
            "classes": [asdict(c) for c in self.classes], "recipe": self.recipe, "source": self.source,
            "dataset_fingerprint": self.dataset_fingerprint,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointMeta":
        """Any format written so far (see the module's docstring), every field checked for its type and range
        here, once, each refusal one line naming the field; a newer format is refused."""
        written = data.get("format", 2 if "lrn" in data else 1)
        if isinstance(written, bool) or not isinstance(written, int) or written < 1:
            raise AlexnetError(f"its metadata's format {written!r} is not a format number (1 to {FORMAT})")
        if written > FORMAT:
            raise AlexnetError(f"its metadata is of format {written}, newer than this version reads ({FORMAT}): "
                               "upgrade alexnet-cli")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise AlexnetError(f"its metadata (format {written}) lacks {', '.join(missing)}")
        arch = _field(data, "arch", str)
        if arch not in ARCHS:
            raise AlexnetError(f"its metadata's arch {arch!r} is not one this version knows ({', '.join(ARCHS)})")
        num_classes = _field(data, "num_classes", int, low=1)
        options = {option: _option(data, option, default) for option, default in ARCH_OPTIONS.items()}
        return cls(arch=arch, num_classes=num_classes, input=_input(data, arch),
                   classes=_classes(data["classes"], num_classes), dropout=_dropout(data.get("dropout")),
                   arch_options=options, recipe=_field(data, "recipe", dict, optional=True),
                   version=_field(data, "version", str, optional=True),
                   source=_field(data, "source", str, optional=True),
                   dataset_fingerprint=_field(data, "dataset_fingerprint", str, optional=True))


_KIND_NAMES = {int: "an integer", str: "a string", dict: "a mapping", bool: "true or false"}


def _field(data: dict[str, Any], key: str, kind: type, *, optional: bool = False, low: int | None = None,
           high: int | None = None) -> Any:
    """``data[key]`` if it is a ``kind`` (no bool for a number) within [low, high]; None where optional."""
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise AlexnetError(f"its metadata's {key} {value!r} is not {_KIND_NAMES[kind]}")
    if (low is not None and value < low) or (high is not None and value > high):
        limits = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise AlexnetError(f"its metadata's {key} {value!r} is out of range: it must be {limits}")
    return value


def _option(data: dict[str, Any], option: str, default: Any) -> Any:
    value = data.get(option, default)
    if option == "fc_width":
        return _field({option: value}, option, int, optional=True, low=1, high=1 << 20)
    return _field({option: value}, option, bool)


def _dropout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise AlexnetError(f"its metadata's dropout {value!r} is not a probability in [0, 1)")
    return float(value)


def _input(data: dict[str, Any], arch: str) -> "InputFormat":
    resize = _field({"resize_size": data.get("resize_size", 256)}, "resize_size", int, low=1, high=4096)
    crop = _field(data, "crop", int, low=1, high=resize)
    spec = ARCHS[arch]
    if spec.fixed_input and crop != spec.input_size:
        raise AlexnetError(f"its metadata's crop {crop} does not fit arch {arch!r}, which takes "
                           f"{spec.input_size}×{spec.input_size} inputs")
    stored = data.get("normalization")
    if stored is None:
        return InputFormat(crop, resize)
    return InputFormat(crop, resize, _normalization(stored))


def _normalization(stored: Any) -> Normalization:
    if not isinstance(stored, dict):
        raise AlexnetError(f"its metadata's normalization {type(stored).__name__} is not a mapping")
    for key in ("channel_mean", "channel_std"):
        values = stored.get(key)
        if (not isinstance(values, (list, tuple)) or len(values) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in values)):
            raise AlexnetError(f"its metadata's normalization {key} {values!r} is not three finite numbers")
    if not all(v > 0 for v in stored["channel_std"]):
        raise AlexnetError(f"its metadata's normalization channel_std {stored['channel_std']!r} must be above 0")
    mean_image = stored.get("mean_image")
    if mean_image is not None:
        try:
            image = np.asarray(mean_image, dtype=np.float64)
        except (TypeError, ValueError):
            image = np.zeros(0)
        shape = image.shape
        if len(shape) != 3 or shape[2] != 3 or not bool(np.isfinite(image).all()):
            raise AlexnetError(f"its metadata's normalization mean_image (shape {shape}) is not a finite H×W×3 image")
    return Normalization.from_dict(stored)


def _classes(stored: Any, num_classes: int) -> list[ClassInfo]:
    """One entry per class, indices 0 to n−1 in order, each WNID once."""
    if not isinstance(stored, list) or len(stored) != num_classes:
        count = len(stored) if isinstance(stored, list) else type(stored).__name__
        raise AlexnetError(f"its metadata lists {count} classes for num_classes {num_classes}")
    classes = []
    for position, entry in enumerate(stored):
        if (not isinstance(entry, dict) or entry.get("index") != position or isinstance(entry.get("index"), bool)
                or not isinstance(entry.get("wnid"), str) or not entry["wnid"]
                or not isinstance(entry.get("words", ""), str)):
            raise AlexnetError(f"its metadata's class {position} {entry!r} is not {{index: {position}, wnid, words}}")
        classes.append(ClassInfo(position, entry["wnid"], entry.get("words", "")))
    repeated = sorted(wnid for wnid, times in Counter(c.wnid for c in classes).items() if times > 1)
    if repeated:
        raise AlexnetError(f"its metadata lists class {repeated[0]} more than once")
    return classes
