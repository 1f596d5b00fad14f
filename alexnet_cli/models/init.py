"""Weight initialisation: every arch starts the way its own source started it, any scheme on request.

    paper      §5: weights N(0, 0.01²), biases 1 in conv2/4/5 and fc6/7, 0 elsewhere
    kaiming    He-normal (fan-in, ReLU gain) weights, zero biases
    glorot     Glorot-uniform weights, zero biases: Keras's defaults (the Keras notes' AlexNets)
    xavier     Xavier-uniform weights, PyTorch's default biases: what Dive into Deep Learning's
               training loop applies to its AlexNet
    tf1-seed   the TF1 benchmark's: truncated normal σ = 0.1 (cut at 2σ), zero biases; it was only
               timed, never trained, and diverges at lr 0.01 (kept to reproduce that)
    builder    whatever the builder did: torchvision's own init for owt and VGG, PyTorch's layer
               defaults otherwise
"""

from typing import get_args

from torch import nn

from alexnet_cli.models.paper import initialize_like_section_5
from alexnet_cli.recipes import InitScheme

INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


def initialize(model: nn.Module, scheme: InitScheme) -> None:
    """Initialise every conv and linear layer of ``model`` in place with ``scheme``."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}: use one of {', '.join(INIT_SCHEMES)}")
    if scheme == "builder":
        return
    if scheme == "paper":
        initialize_like_section_5(model)
        return
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "kaiming":
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif scheme in ("glorot", "xavier"):
            nn.init.xavier_uniform_(module.weight)
        else:  # tf1-seed
            nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)
        if scheme != "xavier":
            nn.init.zeros_(module.bias)
