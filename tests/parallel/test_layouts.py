"""The layout registry: one name per layout, and what each answers before a run (no processes here)."""

import pytest

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import build_model
from alexnet_cli.parallel.layouts import LAYOUTS, benchmarked_layouts, layout_named
from alexnet_cli.parallel.ranks import running_layout
from alexnet_cli.recipes import available_recipes, load_recipe


def test_every_shipped_recipe_names_a_registered_layout():
    for name in available_recipes():
        strategy = load_recipe(name).trainer.strategy or "auto"
        assert strategy in LAYOUTS, (name, strategy)


@pytest.mark.parametrize(("devices", "resolved"), [(2, "two-gpu"), (4, "hybrid"), (8, "hybrid")])
def test_towers_written_by_older_recipes_is_two_gpu_on_two_devices_and_hybrid_on_more(devices, resolved):
    assert layout_named("towers", devices) is LAYOUTS[resolved]


@pytest.mark.parametrize(("name", "devices", "shards"), [
    ("auto", 1, 1), ("ddp", 3, 3), ("ddp", 8, 8), ("two-gpu", 2, 1), ("hybrid", 4, 2), ("hybrid", 8, 4),
    ("weird-trick", 4, 4), ("weird-trick", 2, 2)])
def test_data_parallel_size_is_every_device_or_every_pair_of_towers(name, devices, shards):
    assert LAYOUTS[name].data_parallel_size(devices) == shards


@pytest.mark.parametrize(("name", "shard_of_rank"), [
    ("ddp", [0, 1, 2, 3]), ("weird-trick", [0, 1, 2, 3]), ("hybrid", [0, 0, 1, 1])])
def test_each_rank_reads_its_own_shard_or_its_tower_pairs(name, shard_of_rank):
    assert [LAYOUTS[name].data_parallel_rank(rank) for rank in range(4)] == shard_of_rank


@pytest.mark.parametrize("strategy", ["fsdp", "ddp_spawn"])
def test_another_lightning_strategy_passes_through_data_parallel_over_every_device(strategy):
    layout = layout_named(strategy, 4)
    assert layout.lightning_strategy() == strategy
    assert layout.data_parallel_size(4) == 4 and layout.compiles_model and not layout.collective_forward


def test_no_recipe_strategy_is_one_device_in_this_process():
    layout = layout_named(None, 1)
    assert layout is LAYOUTS["auto"] and layout.one_process and layout.describe(1, 128) == "one device"
    assert not LAYOUTS["ddp"].one_process


def test_descriptions_count_the_pairs_and_the_images_each_layout_shares():
    assert LAYOUTS["ddp"].describe(3, 64).startswith("data-parallel (DDP): 3 copies")
    assert "1 pair(s) of towers" in LAYOUTS["two-gpu"].describe(2, 128)
    assert "data-parallel" not in LAYOUTS["two-gpu"].describe(2, 128)
    assert "3 pair(s) of towers" in LAYOUTS["hybrid"].describe(6, 128)
    assert "data-parallel over the 3 pairs" in LAYOUTS["hybrid"].describe(6, 128)
    assert "split by rows 4 ways over all 4×32 images" in LAYOUTS["weird-trick"].describe(4, 32)


def test_benchmark_comms_measures_every_multi_device_layout_on_its_own_device_count():
    assert benchmarked_layouts() == {"ddp": 2, "two-gpu": 2, "hybrid": 4, "weird-trick": 2}


def test_the_split_layouts_run_this_tools_strategies_and_refuse_compile():
    from alexnet_cli.parallel.towers import TowerParallelStrategy
    from alexnet_cli.parallel.weird_trick import WeirdTrickStrategy

    assert isinstance(LAYOUTS["hybrid"].lightning_strategy(), TowerParallelStrategy)
    assert isinstance(layout_named("towers", 2).lightning_strategy(), TowerParallelStrategy)
    assert isinstance(LAYOUTS["weird-trick"].lightning_strategy(), WeirdTrickStrategy)
    assert [name for name, layout in LAYOUTS.items() if not layout.compiles_model] == ["two-gpu", "hybrid",
                                                                                      "weird-trick"]
    assert [name for name, layout in LAYOUTS.items() if layout.collective_forward] == ["weird-trick"]


def test_only_the_towers_layouts_refuse_a_network_without_two_towers():
    one_tower = build_model("paper-one-tower", 10, fc_width=16)
    for name in ("two-gpu", "hybrid"):
        with pytest.raises(AlexnetError, match="needs model.arch=paper"):
            LAYOUTS[name].check_model(one_tower)
        LAYOUTS[name].check_model(build_model("paper", 10, fc_width=16))
    for name in ("auto", "ddp", "weird-trick"):
        LAYOUTS[name].check_model(one_tower)


def test_outside_a_run_the_running_layout_is_one_process_scoring_its_own_labels():
    layout = running_layout(None)
    labels = [3, 1, 2]
    assert layout.data_parallel_shard() == (0, 1) and layout.scored_labels(labels) is labels
    assert layout.data_parallel_group is None and layout.tensor_parallel_group is None


@pytest.mark.parametrize(("name", "devices", "accepted"), [
    ("two-gpu", 2, True), ("two-gpu", 1, False), ("two-gpu", 4, False), ("hybrid", 4, True), ("hybrid", 8, True),
    ("hybrid", 2, False), ("hybrid", 6, True), ("hybrid", 5, False), ("ddp", 3, True), ("weird-trick", 3, True)])
def test_the_towers_layouts_refuse_a_device_count_they_cannot_pair_before_any_process_starts(name, devices, accepted):
    if accepted:
        LAYOUTS[name].check_devices(devices)
    else:
        with pytest.raises(AlexnetError, match=f"trainer.strategy={name} on {devices} device"):
            LAYOUTS[name].check_devices(devices)
