"""alexnet-cli: train AlexNet the way the 2012 paper did, on today's hardware."""

__version__ = "0.1.0"


def load_model(path):
    """Load a training checkpoint into an eval-mode model (``weights_only``; see ``checkpoints``)."""
    # here: every command imports this package first, and the models import torch (~2.5 s on 2 cores), which
    # 'alexnet --help' and 'alexnet recipes' never need
    from alexnet_cli.models.checkpoints import load_model as _load_model

    return _load_model(path)


__all__ = ["__version__", "load_model"]
