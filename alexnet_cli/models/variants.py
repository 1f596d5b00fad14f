"""The seeds' other networks, so that they train and benchmark through the same tool.

Each builder returns a plain ``nn.Module`` with ``features`` and ``classifier``
blocks like torchvision's models, so filters, summaries and neighbours work alike.
"""

from collections import OrderedDict

import torch
from torch import nn


def owt(num_classes: int = 1000, dropout: float = 0.5, fc_width: int = 4096) -> nn.Module:
    """"One weird trick" AlexNet (Krizhevsky 2014): torchvision's ``alexnet`` itself.

    Built by torchvision so that its published state dicts load unchanged; ``fc_width`` other than
    4096 (for tests) replaces its three Linear layers with narrower ones, initialised as torchvision's are.
    """
    import torchvision  # here, not at the top: its import (torch._dynamo with it) adds ~1 s to every command

    model = torchvision.models.alexnet(num_classes=num_classes, dropout=dropout)
    if fc_width != 4096:
        classifier = model.classifier
        classifier[1] = nn.Linear(classifier[1].in_features, fc_width)
        classifier[4] = nn.Linear(fc_width, fc_width)
        classifier[6] = nn.Linear(fc_width, num_classes)
    return model


class _Sequential2d(nn.Module):
    """features → flatten → classifier, the shape every variant here shares."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def d2l(num_classes: int = 1000, dropout: float = 0.5) -> nn.Module:
    """Dive into Deep Learning's AlexNet (§8.1): 96-256-384-384-256, no LRN, no groups, 224 input."""
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=1),  # 224 → 54
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(3, 2),
            conv2=nn.Conv2d(96, 256, kernel_size=5, padding=2),
            relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(3, 2),
            conv3=nn.Conv2d(256, 384, kernel_size=3, padding=1),
            relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(384, 384, kernel_size=3, padding=1),
            relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(384, 256, kernel_size=3, padding=1),
            relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2),  # → 5×5×256
        )
    )
    return _Sequential2d(features, _fc_head(256 * 5 * 5, (4096, 4096), num_classes, dropout, dropout_first=False))


def _keras_features() -> nn.Sequential:
    """The Keras notes' AlexNet_v1/v2 features: one tower of the paper (48-128-192-192-128), no LRN."""
    return nn.Sequential(
        OrderedDict(
            pad=nn.ZeroPad2d((1, 2, 1, 2)),  # Keras ZeroPadding2D(((1, 2), (1, 2))): 224 → 227
            conv1=nn.Conv2d(3, 48, kernel_size=11, stride=4),
            relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(3, 2),
            conv2=nn.Conv2d(48, 128, kernel_size=5, padding=2),
            relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(3, 2),
            conv3=nn.Conv2d(128, 192, kernel_size=3, padding=1),
            relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(192, 192, kernel_size=3, padding=1),
            relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(192, 128, kernel_size=3, padding=1),
            relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2),  # → 6×6×128
        )
    )


def keras_v1(num_classes: int = 1000, dropout: float = 0.2) -> nn.Module:
    """The Keras notes' ``AlexNet_v1``: FC 2048-2048, dropout 0.2 before each hidden FC."""
    return _Sequential2d(_keras_features(), _fc_head(128 * 6 * 6, (2048, 2048), num_classes, dropout))


def keras_v2(num_classes: int = 1000, dropout: float = 0.2) -> nn.Module:
    """The Keras notes' ``AlexNet_v2``: the same features, FC 1024-128."""
    return _Sequential2d(_keras_features(), _fc_head(128 * 6 * 6, (1024, 128), num_classes, dropout))


def tf1_bench(num_classes: int = 1000, dropout: float = 0.0) -> nn.Module:
    """The TensorFlow 1 timing benchmark's AlexNet: 64-192-384-256-256, LRN, SAME padding.

    TF's ``lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75)`` sums over 9 maps
    without dividing α; PyTorch divides by ``size``, hence alpha=0.001. After pool5 the seed
    has fc6 4096 → fc7 4096 → fc8 1000, each followed by ReLU, then its softmax layer (here
    ``fc9``, ``num_classes`` wide), and no dropout (``dropout`` > 0 adds it after fc6 and fc7).
    """

    def lrn() -> nn.LocalResponseNorm:
        return nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0)

    features = nn.Sequential(
        OrderedDict(
            pad=nn.ZeroPad2d((3, 4, 3, 4)),  # TF "SAME" for 11×11 stride 4 on 224: 56×56 out
            conv1=nn.Conv2d(3, 64, kernel_size=11, stride=4),
            relu1=nn.ReLU(inplace=True),
            norm1=lrn(),
            pool1=nn.MaxPool2d(3, 2),  # "VALID" → 27
            conv2=nn.Conv2d(64, 192, kernel_size=5, padding=2),
            relu2=nn.ReLU(inplace=True),
            norm2=lrn(),
            pool2=nn.MaxPool2d(3, 2),  # → 13
            conv3=nn.Conv2d(192, 384, kernel_size=3, padding=1),
            relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(384, 256, kernel_size=3, padding=1),
            relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(256, 256, kernel_size=3, padding=1),
            relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2),  # → 6
        )
    )
    head = _fc_head(256 * 6 * 6, (4096, 4096), 1000, dropout, dropout_first=False)
    if not dropout:
        head = nn.Sequential(OrderedDict((name, layer) for name, layer in head.named_children()
                                         if not name.startswith("drop")))
    head.add_module("relu8", nn.ReLU(inplace=True))
    head.add_module("fc9", nn.Linear(1000, num_classes))
    return _Sequential2d(features, head)


def vgg(depth: int, num_classes: int = 1000, dropout: float = 0.5, fc_width: int = 4096) -> nn.Module:
    """torchvision's VGG-``depth`` (no batch norm); ``fc_width=2048`` gives the Keras notes' variant."""
    import torchvision  # as in owt

    builder = {11: torchvision.models.vgg11, 13: torchvision.models.vgg13,
               16: torchvision.models.vgg16, 19: torchvision.models.vgg19}[depth]
    model = builder(num_classes=num_classes, dropout=dropout)
    if fc_width != 4096:
        model.classifier = _fc_head(512 * 7 * 7, (fc_width, fc_width), num_classes, dropout)
        for layer in model.classifier.modules():  # as torchvision initialises VGG's own head
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0, 0.01)
                nn.init.zeros_(layer.bias)
    return model


def _fc_head(
    in_features: int, widths: tuple[int, int], num_classes: int, dropout: float, *, dropout_first: bool = True
) -> nn.Sequential:
    """Two hidden FC layers with ReLU and dropout, then the class layer.

    ``dropout_first`` puts dropout before each hidden layer (Keras notes, torchvision);
    otherwise after its ReLU (d2l).
    """
    layers: list[tuple[str, nn.Module]] = []
    previous = in_features
    for index, width in enumerate(widths, start=6):
        block = [(f"fc{index}", nn.Linear(previous, width)), (f"relu{index}", nn.ReLU(inplace=True))]
        drop = (f"drop{index}", nn.Dropout(dropout))
        layers += [drop, *block] if dropout_first else [*block, drop]
        previous = width
    layers.append(("fc8", nn.Linear(previous, num_classes)))
    return nn.Sequential(OrderedDict(layers))
