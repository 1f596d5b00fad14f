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

from dataclasses import asdict, dataclass, field
from typing import Any

from alexnet_cli.data.layout import ClassInfo
from alexnet_cli.data.normalization import Normalization
from alexnet_cli.data.stats import IMAGENET_MEAN, IMAGENET_STD
from alexnet_cli.errors import AlexnetError
from alexnet_cli.models.build import ARCH_OPTIONS
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
               crop: int, resize_size: int, normalization: Normalization, version: str) -> "CheckpointMeta":
        """What a training run writes into each checkpoint."""
        options = {option: getattr(model, option) for option in ARCH_OPTIONS}
        return cls(model.arch, num_classes, list(classes), InputFormat(crop, resize_size, normalization),
                   model.dropout, options, recipe, version)

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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointMeta":
        """Any format written so far (see the module's docstring); a newer one is refused."""
        written = data.get("format", 2 if "lrn" in data else 1)
        if not isinstance(written, int) or written > FORMAT:
            raise AlexnetError(f"its metadata is of format {written!r}, newer than this version reads ({FORMAT}): "
                               "upgrade alexnet-cli")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise AlexnetError(f"its metadata (format {written}) lacks {', '.join(missing)}")
        return cls(
            arch=data["arch"], num_classes=int(data["num_classes"]), input=InputFormat.from_dict(data),
            classes=[ClassInfo(int(c["index"]), c["wnid"], c.get("words", "")) for c in data["classes"]],
            dropout=data.get("dropout"),
            arch_options={option: data.get(option, default) for option, default in ARCH_OPTIONS.items()},
            recipe=data.get("recipe"), version=data.get("version"), source=data.get("source"),
        )
