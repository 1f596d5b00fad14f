"""``prepare_run``: what ``train`` and its dry run refuse, asked of the layout, before anything is written."""

import pytest
from conftest import NARROW_FC

from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.layouts import LAYOUTS
from alexnet_cli.recipes import load_recipe
from alexnet_cli.training.setup import check_compiles, prepare_run

# A GPU recipe on two CPU processes, as the distributed tests run it (NARROW_FC's --set pairs as overrides)
TWO_CPU = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "data.device=cpu",
           *NARROW_FC[1::2]]


@pytest.mark.parametrize("layout", ["two-gpu", "hybrid", "weird-trick"])
def test_compile_is_refused_where_the_layout_exchanges_activations_in_its_forward(layout):
    recipe = load_recipe("cpu-demo", ["model.compile=true", f"trainer.strategy={layout}"])
    with pytest.raises(AlexnetError, match=f"model.compile=true: the .* layout \\(trainer.strategy={layout}\\)"):
        check_compiles(recipe, LAYOUTS[layout])


@pytest.mark.parametrize("layout", ["auto", "ddp"])
def test_compile_is_allowed_on_one_device_and_under_ddp(layout):
    check_compiles(load_recipe("cpu-demo", ["model.compile=true"]), LAYOUTS[layout])


def test_the_batch_must_fit_the_layouts_data_parallel_shard_not_every_device(prepared, tmp_path):
    # 23 training images, batches of 12: two DDP shards hold 11 images each, one tower pair holds all 23
    with pytest.raises(AlexnetError, match="23 training images cannot fill one batch of 12 on each of 2 devices"):
        prepare_run(load_recipe("ddp", [*TWO_CPU, "data.batch_size=12"]), prepared, out=tmp_path / "ddp")
    setup = prepare_run(load_recipe("two-gpu", [*TWO_CPU, "data.batch_size=12"]), prepared, out=tmp_path / "pair")
    assert setup.model.towers == 2 and not (tmp_path / "pair").exists() and not (tmp_path / "ddp").exists()


def test_the_datamodule_is_given_the_layouts_collective_forward(prepared, tmp_path):
    trick = prepare_run(load_recipe("weird-trick", [*TWO_CPU, "data.batch_size=4", "data.normalize=channel"]),
                        prepared, out=tmp_path / "trick")
    ddp = prepare_run(load_recipe("ddp", [*TWO_CPU, "data.batch_size=4"]), prepared, out=tmp_path / "ddp")
    assert trick.datamodule.collective_forward and not ddp.datamodule.collective_forward
    assert trick.datamodule.shard() == ddp.datamodule.shard() == (0, 1)  # outside a run: one process


def test_setup_asks_the_layout_about_the_device_count_only_where_the_recipe_gives_one(prepared, tmp_path):
    cpu = ["trainer.accelerator=cpu", "data.device=cpu", "data.batch_size=4"]
    with pytest.raises(AlexnetError, match="trainer.strategy=two-gpu on 4 device"):
        prepare_run(load_recipe("two-gpu", [*cpu, "trainer.devices=4"]), prepared, out=tmp_path / "a")
    # -1: every device of the machine that runs it, unknown here
    prepare_run(load_recipe("hybrid", [*cpu, "trainer.devices=-1"]), prepared, out=tmp_path / "b")
