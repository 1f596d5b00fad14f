"""One tower's layers, as the paper network gives them to a layout that runs each tower on a device of its own."""

import pytest
import torch
from torch import nn

from alexnet_cli.models import PaperAlexNet


def test_a_towers_lrn_keeps_every_setting_the_network_was_built_with_over_its_own_maps():
    model = PaperAlexNet(num_classes=4, fc_width=16)
    norm = model.features.norm1
    norm.size, norm.alpha, norm.impl = 3, 2e-4, "closed-form"  # as an option of the recipe would set them
    tower = model.tower_layer("features.norm1")
    assert (tower.size, tower.alpha, tower.beta, tower.k, tower.impl, tower.groups) == (3, 2e-4, norm.beta, norm.k,
                                                                                      "closed-form", 1)
    maps = torch.randn(2, 96, 5, 5) * 100
    torch.testing.assert_close(torch.cat([tower(half) for half in maps.chunk(2, dim=1)], dim=1), norm(maps))


@pytest.mark.parametrize("name", ["features.pool1", "features.pool5", "classifier.drop7"])
def test_a_towers_pooling_and_dropout_are_copies_of_the_networks(name):
    model = PaperAlexNet(num_classes=4, dropout=0.3, overlap_pool=False, fc_width=16)
    layer = model.tower_layer(name)
    assert layer is not model.get_submodule(name) and repr(layer) == repr(model.get_submodule(name))


def test_the_lrn_ablation_gives_each_tower_no_normalisation():
    assert isinstance(PaperAlexNet(num_classes=4, lrn=False, fc_width=16).tower_layer("features.norm2"), nn.Identity)


def test_a_weighted_layer_is_not_copied_into_a_tower():
    with pytest.raises(ValueError, match="features.conv2 has weights"):
        PaperAlexNet(num_classes=4, fc_width=16).tower_layer("features.conv2")
