"""AlexNet as published: Krizhevsky, Sutskever & Hinton, NeurIPS 2012 (§3, Figure 2).

The network reads top to bottom like Figure 2. Three details the figure hides:
the input is 227×227 (224 does not divide: (224 − 11)/4 + 1 is not an integer);
conv2, conv4 and conv5 only see the kernel maps of their own GPU, which is exactly
a grouped convolution with two groups (conv3 and the FC layers read both GPUs'
maps); and each GPU normalised (LRN) its own maps. With biases that is 60,965,224
parameters for 1000 classes.
"""

import copy
import warnings
from collections import OrderedDict

import torch
from torch import nn

from alexnet_cli.models.lrn import LrnChoice, LrnImpl, LrnKernel, choose_impl, is_channels_last, kernel_function

INPUT_SIZE = 227  # §3.5 says 224, but only 227 gives conv1's 55×55 maps
TOWERS = 2  # one tower per GTX 580 (§3.2)

# §3.3: b = a / (k + α Σ a²)^β over n adjacent maps.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


class LocalResponseNorm(nn.Module):
    """b = a / (k + α Σ a²)^β, the sum over ``size`` adjacent maps (§3.3), with α *not* divided by n.

    With ``groups`` > 1 the sum stays inside each group of maps, as on the paper's
    two GPUs, where each tower normalised its own maps and nothing crossed between
    GPUs at this layer. One group equals ``nn.LocalResponseNorm(size, alpha * size,
    beta, k)``. Always computed in float32, also under bf16 autocast (see ``models/lrn.py``),
    by ``impl``: the ``reference`` (autograd through shifted adds), the ``closed-form``
    backward that stores only the input, the same as ``triton`` kernels, or ``auto`` (``models/lrn.choose_impl``:
    Triton on a GPU where it passes its check, the reference on a CPU).
    """

    def __init__(self, size: int = LRN_SIZE, alpha: float = LRN_ALPHA, beta: float = LRN_BETA,
                 k: float = LRN_K, groups: int = 1, impl: LrnImpl = "auto") -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups
        self.impl = impl

    @property
    def impl(self) -> LrnImpl:
        return self._impl

    @impl.setter
    def impl(self, impl: LrnImpl) -> None:
        self._impl = impl
        self.chosen: dict[tuple, LrnKernel] = {}  # (device type, index, channels-last) → what runs there

    def choose(self, device: torch.device, channels_last: bool) -> LrnChoice:
        """Decide what runs on ``device`` (``models/lrn.choose_impl``, the Triton check included) and keep it:
        made before a compile (``execution.prepare_lrn``), the compiled forward only looks it up."""
        choice = choose_impl(self.impl, device, channels_last=channels_last)
        self.chosen[(device.type, device.index, channels_last)] = choice.kernel
        return choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = is_channels_last(x)
        kernel = self.chosen.get((x.device.type, x.device.index, layout))
        if kernel is None:  # not prepared (evaluation, a script): chosen here, and what differs said once
            choice = self.choose(x.device, layout)
            if choice.note:
                warnings.warn(choice.note, stacklevel=2)
            kernel = choice.kernel
        function = kernel_function(kernel)
        if x.device.type == "meta":  # the traffic count's tensors, which have no autocast to turn off
            return function(x, self.size, self.alpha, self.beta, self.k, self.groups)
        with torch.autocast(x.device.type, enabled=False):
            return function(x, self.size, self.alpha, self.beta, self.k, self.groups)

    def regrouped(self, groups: int) -> "LocalResponseNorm":
        """This normalisation with its sum inside each of ``groups`` groups of maps, every other setting kept (its
        kernel chosen afresh where the copy runs)."""
        norm = copy.deepcopy(self)
        norm.groups = groups
        norm.impl = self.impl  # forgets the kernels chosen for this one
        return norm

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, groups={self.groups}, "
                f"impl={self.impl}")


def paper_lrn(groups: int = TOWERS, impl: LrnImpl = "auto") -> LocalResponseNorm:
    """Local response normalisation with the paper's constants (k=2, n=5, α=1e-4, β=0.75), per tower."""
    return LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K, groups, impl)


class PaperAlexNet(nn.Module):
    """The 2012 network: 5 conv layers (96-256-384-384-256) and 3 FC layers (4096-4096-classes).

    The paper's ablations (§3) are switches: ``lrn=False`` drops both LRN layers (§3.3: they lowered
    top-1/top-5 error by 1.4/1.2 points); ``overlap_pool=False`` pools 2×2 with stride 2 instead of
    3×3 with stride 2, with the same output sizes (§3.4: overlapping lowered them by 0.4/0.3);
    ``towers=1`` is the one-GPU net the two-GPU scheme was compared with (§3.2: the split lowered
    them by 1.7/1.2): half the kernels of conv1–conv4, no groups, while conv5 and the FC layers are
    not halved (the paper's footnote: most parameters are in fc6, which reads conv5).
    ``fc_width`` (the paper: 4096) narrows fc6 and fc7: not the paper's net, but the same code paths
    with a small fraction of its 61 M parameters, which is what the test suite trains.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, *, lrn: bool = True,
                 overlap_pool: bool = True, towers: int = TOWERS, fc_width: int = 4096) -> None:
        super().__init__()
        if towers not in (1, TOWERS):
            raise ValueError(f"towers must be 1 or {TOWERS}, not {towers}")
        self.lrn, self.overlap_pool, self.towers = lrn, overlap_pool, towers

        def width(kernels: int) -> int:  # a conv layer's kernels over all towers
            return kernels * towers // TOWERS

        def norm() -> nn.Module:
            return paper_lrn(groups=towers) if lrn else nn.Identity()

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=3, stride=2) if overlap_pool else nn.MaxPool2d(kernel_size=2, stride=2)

        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, width(96), kernel_size=11, stride=4),  # input replicated on both GPUs
                relu1=nn.ReLU(inplace=True),
                norm1=norm(),
                pool1=pool(),  # overlapping pooling, §3.4
                conv2=nn.Conv2d(width(96), width(256), kernel_size=5, padding=2, groups=towers),
                relu2=nn.ReLU(inplace=True),
                norm2=norm(),
                pool2=pool(),
                conv3=nn.Conv2d(width(256), width(384), kernel_size=3, padding=1),  # the GPUs exchange maps here
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(width(384), width(384), kernel_size=3, padding=1, groups=towers),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(width(384), 256, kernel_size=3, padding=1, groups=towers),  # never halved
                relu5=nn.ReLU(inplace=True),
                pool5=pool(),
            )
        )
        # §4.2: dropout after the ReLUs of the first two FC layers, as in the paper's own cuda-convnet.
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=nn.Linear(256 * 6 * 6, fc_width),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(dropout),
                fc7=nn.Linear(fc_width, fc_width),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
                fc8=nn.Linear(fc_width, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def tower_layer(self, name: str) -> nn.Module:
        """One tower's copy of the weightless layer ``name`` (``features.norm1``, ``classifier.drop6``, ...), for
        a layout that runs each tower on a device of its own: the layer as this network was built, an LRN
        normalising the tower's own maps only (each GPU normalised its own, §3.3). A weighted layer's part of a
        tower is its rows, which such a layout cuts itself."""
        layer = self.get_submodule(name)
        if next(layer.parameters(), None) is not None:
            raise ValueError(f"{name} has weights: a tower holds its rows of them, not a copy")
        if isinstance(layer, LocalResponseNorm):
            return layer.regrouped(layer.groups // self.towers)
        return copy.deepcopy(layer)


# §5: biases of conv2, conv4, conv5 and the hidden FC layers start at 1 so that the
# ReLUs receive positive inputs early on; all other biases start at 0.
_PAPER_BIAS_ONE = {"conv2", "conv4", "conv5", "fc6", "fc7"}


def initialize_like_section_5(model: nn.Module) -> None:
    """§5: every conv and linear weight ~ N(0, 0.01²); biases 1 in conv2/4/5 and fc6/7, 0 elsewhere."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            nn.init.constant_(module.bias, 1.0 if name.rsplit(".", 1)[-1] in _PAPER_BIAS_ONE else 0.0)
