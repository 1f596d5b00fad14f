"""``train --dry-run``'s plan: the layout's data-parallel size and description, no dataset needed."""

import pytest

from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import load_recipe
from alexnet_cli.training.plan import plan_run

CPU = ["trainer.accelerator=cpu", "data.device=cpu"]


def test_hybrid_on_four_devices_shards_the_data_over_two_pairs():
    plan = plan_run(load_recipe("hybrid", [*CPU, "trainer.devices=4", "data.batch_size=16"]), 1000)
    assert (plan.devices, plan.data_parallel, plan.global_batch) == (4, 2, 32)
    assert plan.steps_per_epoch == 1000 // 2 // 16
    assert "2 pair(s) of towers" in plan.description


def test_ddp_shards_the_data_over_every_device_of_every_node():
    plan = plan_run(load_recipe("ddp", [*CPU, "trainer.devices=3", "trainer.num_nodes=2", "data.batch_size=10"]),
                    600)
    assert (plan.devices, plan.data_parallel, plan.global_batch, plan.steps_per_epoch) == (6, 6, 60, 10)
    assert plan.description.startswith("data-parallel (DDP): 6 copies")


def test_a_recipe_saying_towers_on_two_devices_plans_the_papers_single_pair():
    plan = plan_run(load_recipe("two-gpu", [*CPU, "trainer.strategy=towers", "data.batch_size=8"]), 100)
    assert (plan.data_parallel, plan.global_batch, plan.steps_per_epoch) == (1, 8, 12)
    assert "1 pair(s) of towers" in plan.description and "data-parallel over" not in plan.description


def test_the_weird_trick_plan_shards_the_data_over_every_device():
    plan = plan_run(load_recipe("weird-trick", [*CPU, "trainer.devices=4", "data.batch_size=8"]), 100)
    assert (plan.data_parallel, plan.global_batch, plan.steps_per_epoch) == (4, 32, 3)
    assert "over all 4×8 images" in plan.description


def test_a_split_layout_counts_its_devices_over_every_node():
    plan = plan_run(load_recipe("two-gpu", [*CPU, "trainer.devices=1", "trainer.num_nodes=2", "data.batch_size=8"]),
                    100)
    assert (plan.devices, plan.data_parallel) == (2, 1)  # the paper's pair, one tower on each node
    with pytest.raises(AlexnetError, match="trainer.strategy=two-gpu on 4 device"):
        plan_run(load_recipe("two-gpu", [*CPU, "trainer.devices=2", "trainer.num_nodes=2"]))
