"""The model zoo: the paper's AlexNet and the seeds' variants."""

from alexnet_cli.models.build import ARCHS, ArchSpec, build_model, build_network
from alexnet_cli.models.init import INIT_SCHEMES, initialize
from alexnet_cli.models.paper import PaperAlexNet, paper_lrn

__all__ = ["ARCHS", "INIT_SCHEMES", "ArchSpec", "PaperAlexNet", "build_model", "build_network", "initialize",
           "paper_lrn"]
