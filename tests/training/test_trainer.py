"""The Trainer's arguments for a recipe: the layout's strategy, the device count, the refusals asked first."""

import pytest

from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.layouts import layout_named
from alexnet_cli.recipes import load_recipe
from alexnet_cli.training.plan import RunPlan, check_trainer_arguments, device_count
from alexnet_cli.training.trainer import make_logger, trainer_arguments

# A GPU recipe on CPU processes: a count of them (-1, every GPU, means nothing on the CPU, which Lightning refuses)
CPU = ["trainer.accelerator=cpu", "data.device=cpu", "trainer.devices=2"]


def _plan(recipe) -> RunPlan:
    """The plan ``trainer_arguments`` takes, on the recipe's devices unchecked (``plan_run`` checks them, tested
    with it): a hybrid on two CPU processes still gets its strategy."""
    return RunPlan(recipe, layout_named(recipe.trainer.strategy, device_count(recipe)), on_gpu=False,
                   devices_per_node=2, num_nodes=1, crop=227, compile=None)


@pytest.mark.parametrize(("recipe", "overrides", "strategy"), [
    ("two-gpu", [], "TowerParallelStrategy"), ("hybrid", [], "TowerParallelStrategy"),
    ("two-gpu", ["trainer.strategy=towers", "trainer.devices=4"], "TowerParallelStrategy"),
    ("weird-trick", [], "WeirdTrickStrategy")])
def test_the_split_layouts_get_this_tools_strategy(tmp_path, recipe, overrides, strategy):
    arguments = trainer_arguments(_plan(load_recipe(recipe, [*CPU, *overrides])), tmp_path, True, [])
    assert type(arguments["strategy"]).__name__ == strategy


def test_one_process_passes_lightnings_auto_by_name(tmp_path):
    from dataclasses import replace

    plan = replace(_plan(load_recipe("cpu-demo", [*CPU, "trainer.devices=1"])), devices_per_node=1)
    assert trainer_arguments(plan, tmp_path, True, [])["strategy"] == "auto"


@pytest.mark.parametrize(("recipe", "overrides", "start_method"), [
    ("ddp", [], "popen"), ("cpu-demo", [], "popen"), ("ddp", ["trainer.strategy=ddp_spawn"], "spawn")])
def test_lightnings_own_strategies_get_the_recipes_collective_timeout(tmp_path, recipe, overrides, start_method):
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    recipe = load_recipe(recipe, [*CPU, *overrides, "trainer.collective_timeout_s=45"])
    strategy = trainer_arguments(_plan(recipe), tmp_path, True, [])["strategy"]
    assert type(strategy) is DDPStrategy and strategy._timeout == timedelta(seconds=45)
    assert strategy._start_method == start_method  # as Lightning's registry builds the name


@pytest.mark.parametrize(("accelerator", "devices", "nodes", "counted"), [
    ("cpu", 2, 1, 2), ("cpu", 4, 3, 12), ("cpu", "auto", 1, 1),  # Lightning's "auto" on the CPU: one process
    ("gpu", -1, 2, 2), ("gpu", "auto", 1, 1),  # every GPU, none here to count: one per node
    ("gpu", "[0, 1]", 2, 4)])  # a list counts its ids
def test_device_count_is_over_every_node_and_counts_an_unknown_count_as_one(accelerator, devices, nodes, counted,
                                                                          monkeypatch):
    from alexnet_cli.training import plan

    monkeypatch.setattr(plan, "torch_cuda_devices", lambda: 0)  # no GPU to count, also on a GPU machine
    recipe = load_recipe("ddp", [f"trainer.accelerator={accelerator}", f"trainer.devices={devices}",
                                 f"trainer.num_nodes={nodes}"])
    assert device_count(recipe) == counted


def test_both_checkpoint_schedules_are_refused_before_any_callback_is_built():
    recipe = load_recipe("cpu-demo", ["checkpoint.every_n_train_steps=10", "checkpoint.every_minutes=5"])
    with pytest.raises(AlexnetError, match="every_n_train_steps and checkpoint.every_minutes: set one"):
        check_trainer_arguments(recipe)


def test_an_unknown_logger_is_refused_alike_by_the_check_and_the_builder(tmp_path):
    recipe = load_recipe("cpu-demo", ["trainer.logger=mlflow"])
    with pytest.raises(AlexnetError, match="trainer.logger 'mlflow': use csv, tensorboard or wandb"):
        check_trainer_arguments(recipe)
    with pytest.raises(AlexnetError, match="trainer.logger 'mlflow': use csv, tensorboard or wandb"):
        make_logger("mlflow", tmp_path)
