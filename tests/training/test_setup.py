"""``prepare_run``: what ``train`` and its dry run refuse, asked of the layout, before anything is written."""

import pytest
import torch
from conftest import NARROW_FC, THREE_STEP_RUN, invoke_alexnet, one_line_error

from alexnet_cli.errors import AlexnetError
from alexnet_cli.parallel.layouts import LAYOUTS
from alexnet_cli.recipes import load_recipe
from alexnet_cli.training.plan import check_compiles
from alexnet_cli.training.setup import prepare_run

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


@pytest.fixture
def no_gpus_here(monkeypatch):
    """A machine without GPUs, also where the tests run on one: -1 and "auto" cannot be counted there."""
    from alexnet_cli.training import plan

    monkeypatch.setattr(plan, "torch_cuda_devices", lambda: 0)


def test_setup_asks_the_layout_about_the_device_count_only_where_it_can_be_counted(prepared, tmp_path, no_gpus_here):
    cpu = ["trainer.accelerator=cpu", "data.device=cpu", "data.batch_size=4"]
    with pytest.raises(AlexnetError, match="trainer.strategy=two-gpu on 4 device"):
        prepare_run(load_recipe("two-gpu", [*cpu, "trainer.devices=4"]), prepared, out=tmp_path / "a")
    # -1: every GPU of the machine that runs it, unknown on this one (it has none)
    prepare_run(load_recipe("hybrid", ["data.batch_size=4", "trainer.devices=-1"]), prepared, out=tmp_path / "b")


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["trainer.strategy=bogus"], "trainer.strategy='bogus' is not a layout: use auto, ddp, two-gpu"),
    (["trainer.strategy=123"], "trainer.strategy=123: give a layout's name"),
    (["trainer.strategy=TWO-GPU"], "'TWO-GPU' is not a layout (did you mean two-gpu?)"),
    (["trainer.strategy=[ddp]"], "trainer.strategy=['ddp']: give a layout's name"),
    (["trainer.accelerator=tpu9"], "trainer.accelerator='tpu9': use one of auto, gpu, cpu, cuda, mps, tpu"),
    (["trainer.strategy=two-gpu", "trainer.accelerator=gpu", "trainer.devices=[0]"], "two-gpu on 1 device(s)"),
    (["trainer.strategy=two-gpu", "trainer.devices=1"], "trainer.strategy=two-gpu on 1 device(s)"),
    (["trainer.strategy=towers", "trainer.accelerator=gpu", "trainer.devices=3"], "trainer.strategy=towers on 3"),
    (["trainer.devices=-1"], "trainer.devices=-1 means every GPU; on the CPU give a number of processes"),
    (["trainer.devices=[0, 1]"], "the CPU takes a number of processes, not device ids"),
    (["trainer.accelerator=gpu", "trainer.devices=[0, 0]"], "give distinct GPU ids"),
])
def test_the_dry_run_refuses_in_one_line_what_the_run_would(prepared, tmp_path, overrides, fragment):
    sets = [item for override in overrides for item in ("--set", override)]
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", tmp_path / "run",
                            "--dry-run", *sets)
    one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_a_run_refuses_an_unknown_strategy_before_it_writes_anything(prepared, tmp_path):
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", tmp_path / "run", "--set",
                            "trainer.strategy=bogus")
    one_line_error(result, "trainer.strategy='bogus' is not a layout")
    assert not (tmp_path / "run").exists()


def test_the_dry_run_names_a_gpu_count_it_cannot_know_here(prepared, tmp_path, no_gpus_here):
    result = invoke_alexnet("train", "--recipe", "single-gpu", "--data", prepared, "--out", tmp_path / "run",
                            "--dry-run", "--set", "trainer.devices=auto", "--set", "data.normalize=channel",
                            "--set", "data.batch_size=4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainer.devices=auto:" in result.stdout and "every GPU" in result.stdout


def test_a_resume_of_a_checkpoint_with_an_edited_step_is_refused_by_the_dry_run(prepared, trained_run, tmp_path):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    state["global_step"] = "3"
    torch.save(state, checkpoint)
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--resume", out, "--dry-run",
                            *THREE_STEP_RUN)
    one_line_error(result, f"{checkpoint}: global_step '3' is not a step count")
