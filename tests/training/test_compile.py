"""model.compile, channels_last and split_groups through ``alexnet train``: checkpoints that load anywhere."""

import json

import torch
from conftest import NARROW_FC, invoke_alexnet

from alexnet_cli.models.checkpoints import load_checkpoint

# Every speed switch away from its default, compiled with aot_eager: the graph capture of torch.compile
# (dynamo + autograd) without inductor's code generation, which would cost minutes on this CPU.
FAST_SWITCHES = ["--set", "model.compile=true", "--set", "model.compile_backend=aot_eager",
                 "--set", "model.channels_last=true", "--set", "model.split_groups=true",
                 "--set", "model.lrn_impl=closed-form"]
FEW_STEPS = ["--set", "trainer.limit_train_batches=3", "--set", "data.batch_size=4",
             "--set", "trainer.log_every_n_steps=1", "--set", "model.num_classes=4", *NARROW_FC]


def test_a_compiled_channels_last_run_saves_plain_keys_resumes_and_evaluates(prepared, tmp_path):
    run = tmp_path / "run"
    first = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", run, *FAST_SWITCHES,
                           *FEW_STEPS, "--set", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    said = " ".join((first.stdout + first.stderr).split())  # the terminal's width folds lines
    assert "model.compile: the first step compiles the network (aot_eager, mode default)" in said
    assert "the first step, compiling included" in said
    facts = json.loads((run / "run.json").read_text())
    assert facts["compile_seconds"] > 0

    checkpoint = run / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert not [key for key in state["state_dict"] if "_orig_mod" in key]
    assert load_checkpoint(checkpoint).arch == "paper"  # into a plain, eager, grouped network

    resumed = invoke_alexnet("train", "--recipe", run / "recipe.yaml", "--data", prepared, "--resume", run,
                             "--set", "trainer.max_epochs=2", "--json", tmp_path / "train.json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "train.json").read_text())["global_step"] == 6

    evaluated = invoke_alexnet("eval", "--checkpoint", checkpoint, "--data", prepared, "--center-crop", "--quiet",
                               "--json", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["images"] == 12


def test_the_split_layouts_refuse_compile_before_any_process_starts(prepared, tmp_path):
    result = invoke_alexnet("train", "--recipe", "two-gpu", "--data", prepared, "--out", tmp_path / "run",
                            "--dry-run", "--set", "model.compile=true", "--set", "trainer.accelerator=cpu",
                            "--set", "data.device=cpu", "--set", "trainer.precision=32-true", "--set", "data.batch_size=4")
    assert result.returncode == 2
    assert "model.compile=true: the towers layout" in result.stderr and len(result.stderr.strip().splitlines()) == 1
