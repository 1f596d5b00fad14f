"""The model zoo: one table from arch name to what the arch is and can do, and the one builder from a recipe's
``model`` section to a network (train, resume, eval, predict, neighbors and the benchmarks all build here)."""

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, get_args

from torch import nn

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import paper, variants
from alexnet_cli.models.execution import CompileOptions, apply_execution
from alexnet_cli.models.init import initialize
from alexnet_cli.recipes import InitScheme, ModelConfig

# The recipe's arch options (fields of ModelConfig): keywords of the builders of the archs that take them. A value
# other than ModelConfig's default is passed on, and refused by an arch whose ArchSpec.options lack it.
ArchOption = Literal["fc_width", "lrn", "overlap_pool"]
ARCH_OPTIONS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ModelConfig)
                                if f.name in get_args(ArchOption)}  # option → its "not given" value
_OPTION_MEANING = {  # for the refusal of an arch without the option
    "fc_width": "sets the hidden FC layers' width",
    "lrn": "is one of the paper's ablations (§3.3)",
    "overlap_pool": "is one of the paper's ablations (§3.4)",
}


@dataclass(frozen=True)
class ArchSpec:
    """What the tool needs to know about an architecture besides its modules."""

    builder: Callable[..., nn.Module]
    input_size: int  # the crop the network is built for
    description: str
    default_dropout: float = 0.5
    default_init: InitScheme = "builder"  # its source's (see models/init.py)
    options: frozenset[ArchOption] = frozenset()  # the arch options its builder takes
    fixed_input: bool = True  # False: an adaptive pool before the classifier takes other crops than input_size


_PAPER_OPTIONS = frozenset({"fc_width", "lrn", "overlap_pool"})
_WIDTH_ONLY = frozenset({"fc_width"})

ARCHS: dict[str, ArchSpec] = {
    "paper": ArchSpec(paper.PaperAlexNet, paper.INPUT_SIZE, "the 2012 paper's network: 2 towers, LRN, 227 input",
                      default_init="paper", options=_PAPER_OPTIONS),
    "paper-one-tower": ArchSpec(partial(paper.PaperAlexNet, towers=1), paper.INPUT_SIZE,
                                "§3.2's one-GPU net: half the kernels of conv1-4, conv5 and FC not halved",
                                default_init="paper", options=_PAPER_OPTIONS),
    "owt": ArchSpec(variants.owt, 224, "torchvision's 'one weird trick' AlexNet (64-192-384-256-256)",
                    options=_WIDTH_ONLY, fixed_input=False),
    "d2l": ArchSpec(variants.d2l, 224, "Dive into Deep Learning's AlexNet (96-256-384-384-256, no LRN)",
                    default_init="xavier"),
    "keras-v1": ArchSpec(variants.keras_v1, 224, "Keras notes' AlexNet_v1: one tower, FC 2048-2048", 0.2,
                         default_init="glorot"),
    "keras-v2": ArchSpec(variants.keras_v2, 224, "Keras notes' AlexNet_v2: one tower, FC 1024-128", 0.2,
                         default_init="glorot"),
    # The seed's own init (tf1-seed) diverges at lr 0.01; TensorFlow's default layer init (Glorot-uniform)
    # trains (He's made its initial logits so large that lr 0.001 diverged).
    "tf1-bench": ArchSpec(variants.tf1_bench, 224, "TF1 benchmark's AlexNet: 64-192-384-256-256, LRN, SAME, "
                          "FC 4096-4096-1000 + class layer", 0.0, default_init="glorot"),
    **{
        f"vgg{depth}": ArchSpec(partial(variants.vgg, depth), 224, f"torchvision's VGG-{depth} (fc_width option)",
                                options=_WIDTH_ONLY, fixed_input=False)
        for depth in (11, 13, 16, 19)
    },
}


def arch_spec(arch: str, *, key: str | None = None) -> ArchSpec:
    """``ARCHS[arch]``, or an error naming the recipe ``key`` that gave it."""
    if arch not in ARCHS:
        raise AlexnetError(f"{f'{key}: ' if key else ''}unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    return ARCHS[arch]


def input_crop(arch: str, requested: int | None) -> int:
    """The crop ``arch`` trains and evaluates on: ``requested`` (``data.crop_size``), None for the arch's own."""
    spec = arch_spec(arch, key="model.arch")
    crop = requested or spec.input_size
    if spec.fixed_input and crop != spec.input_size:
        raise AlexnetError(f"data.crop_size {crop}: arch {arch!r} takes {spec.input_size}×{spec.input_size} inputs")
    return crop


def option_value(arch: str, option: ArchOption, value: Any) -> Any:
    """What ``value`` of an arch option builds: the arch's own default where the recipe gives none (None)."""
    if value is not None or arch not in ARCHS:
        return value
    parameter = inspect.signature(ARCHS[arch].builder).parameters.get(option)
    return None if parameter is None else parameter.default


def archs_taking(option: ArchOption) -> list[str]:
    return [name for name, spec in ARCHS.items() if option in spec.options]


def build_model(arch: str, num_classes: int = 1000, dropout: float | None = None, *,
                init: InitScheme | None = None, **options: Any) -> nn.Module:
    """Build a network of the zoo.

    Args:
        arch: a name from ``ARCHS``.
        num_classes: width of the last layer.
        dropout: dropout probability of the hidden FC layers (the arch's own default if None).
        init: a scheme of ``models/init.py``; None: the arch's own source's (``ArchSpec.default_init``).
        **options: arch options (``ArchOption``), each taken only by the archs whose ``ArchSpec.options`` name
            it: ``fc_width`` (the hidden FC width: the Keras notes' VGG used 2048; tests narrow it), ``lrn`` and
            ``overlap_pool`` (the paper's ablations, §3.3 and §3.4).
    """
    spec = arch_spec(arch)
    unknown = set(options) - set(ARCH_OPTIONS)
    if unknown:
        raise TypeError(f"build_model() got unknown arch options {sorted(unknown)}: use {', '.join(ARCH_OPTIONS)}")
    given = {option: value for option, value in options.items() if value != ARCH_OPTIONS[option]}
    for option, value in given.items():
        if option not in spec.options:
            shown = str(value).lower() if isinstance(value, bool) else value
            raise AlexnetError(f"model.{option}={shown} {_OPTION_MEANING[option]}: arch {arch!r} has no such layers "
                               f"to change (use {' or '.join(archs_taking(option))})")
    model = spec.builder(num_classes=num_classes, dropout=spec.default_dropout if dropout is None else dropout,
                         **given)
    initialize(model, init or spec.default_init)
    return model


def build_network(config: ModelConfig, num_classes: int) -> nn.Module:
    """The network a recipe's ``model`` section describes, its weights drawn from the global torch generator
    (``init``) and its execution switches applied (``models/execution.py``; ``compile`` comes later, on the
    layout the strategy leaves)."""
    options = {option: getattr(config, option) for option in ARCH_OPTIONS}
    model = build_model(config.arch, num_classes, config.dropout, init=config.init, **options)
    return apply_execution(model, lrn_impl=config.lrn_impl, split_groups=config.split_groups,
                           channels_last=config.channels_last)


def compile_options(config: ModelConfig) -> CompileOptions | None:
    """``model.compile``'s settings, or None when the network runs eagerly; applied after ``build_network``, to
    the layout the strategy leaves (``compile_in_place``)."""
    return CompileOptions(config.compile_mode, config.compile_backend) if config.compile else None
