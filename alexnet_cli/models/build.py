"""The model zoo: one table from arch name to builder, input size and description."""

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import paper, variants
from alexnet_cli.models.init import InitScheme, initialize


@dataclass(frozen=True)
class ArchSpec:
    """What the tool needs to know about an architecture besides its modules."""

    builder: Callable[..., nn.Module]
    input_size: int  # the crop the network is built for
    description: str
    default_dropout: float = 0.5
    default_init: InitScheme = "builder"  # its source's (see models/init.py)


ARCHS: dict[str, ArchSpec] = {
    "paper": ArchSpec(paper.PaperAlexNet, paper.INPUT_SIZE, "the 2012 paper's network: 2 towers, LRN, 227 input",
                      default_init="paper"),
    "paper-one-tower": ArchSpec(partial(paper.PaperAlexNet, towers=1), paper.INPUT_SIZE,
                                "§3.2's one-GPU net: half the kernels of conv1-4, conv5 and FC not halved",
                                default_init="paper"),
    "owt": ArchSpec(variants.owt, 224, "torchvision's 'one weird trick' AlexNet (64-192-384-256-256)"),
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
        f"vgg{depth}": ArchSpec(partial(variants.vgg, depth), 224, f"torchvision's VGG-{depth} (fc_width option)")
        for depth in (11, 13, 16, 19)
    },
}


PAPER_ARCHS = ("paper", "paper-one-tower")  # the archs the §3 ablation switches apply to


def build_model(
    arch: str,
    num_classes: int = 1000,
    dropout: float | None = None,
    *,
    init: InitScheme | None = None,
    fc_width: int | None = None,
    lrn: bool = True,
    overlap_pool: bool = True,
) -> nn.Module:
    """Build a network of the zoo.

    Args:
        arch: a name from ``ARCHS``.
        num_classes: width of the last layer.
        dropout: dropout probability of the hidden FC layers (the arch's own default if None).
        init: a scheme of ``models/init.py``; None: the arch's own source's (``ArchSpec.default_init``).
        fc_width: hidden FC width (the Keras notes' VGG used 2048; paper and owt narrow it for tests).
        lrn, overlap_pool: the paper's ablations (§3.3, §3.4), paper archs only.
    """
    if arch not in ARCHS:
        raise AlexnetError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    kwargs: dict = {"num_classes": num_classes, "dropout": spec.default_dropout if dropout is None else dropout}
    if fc_width is not None:
        if not arch.startswith("vgg") and arch not in (*PAPER_ARCHS, "owt"):
            raise AlexnetError(f"model.fc_width only applies to the vgg, paper and owt archs, not {arch!r}")
        kwargs["fc_width"] = fc_width
    for key, value in (("lrn", lrn), ("overlap_pool", overlap_pool)):
        if not value and arch not in PAPER_ARCHS:
            raise AlexnetError(f"model.{key}=false is one of the paper's ablations: arch {arch!r} has no such "
                               f"layers to switch (use {' or '.join(PAPER_ARCHS)})")
    if arch in PAPER_ARCHS:
        kwargs.update(lrn=lrn, overlap_pool=overlap_pool)
    model = spec.builder(**kwargs)
    initialize(model, init or spec.default_init)
    return model
