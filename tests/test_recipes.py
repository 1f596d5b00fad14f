"""Recipes: every shipped file validates and builds; overrides and errors name the key."""

import re

import pytest
import torch

from alexnet_cli.errors import AlexnetError
from alexnet_cli.models import build_model
from alexnet_cli.recipes import available_recipes, load_recipe, recipe_from_dict
from alexnet_cli.training.module import AlexNetModule
from alexnet_cli.training.plan import crop_size, plan_run


@pytest.mark.parametrize("name", sorted(available_recipes()))
def test_every_shipped_recipe_validates_and_builds_its_model_and_optimizer(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    model = build_model(recipe.model.arch, 10, recipe.model.dropout, init=recipe.model.init)
    module = AlexNetModule(model, recipe.optim, num_classes=10, meta={})
    optimizer = torch.optim.SGD(module.parameters(), lr=recipe.optim.lr)
    assert optimizer.param_groups[0]["lr"] == recipe.optim.lr
    assert crop_size(recipe) == {"paper": 227, "owt": 224}[recipe.model.arch]  # weird-trick runs the 2014 net


def test_every_recipe_key_carries_a_comment():
    from alexnet_cli.recipes import available_recipes

    for name, path in available_recipes().items():
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and not stripped.endswith(":") and ":" in stripped:
                assert "#" in line or stripped.startswith("description"), f"{name}: {line!r} has no comment"


def test_single_gpu_recipe_holds_the_papers_section_5_settings():
    recipe = load_recipe("single-gpu")
    assert recipe.model.arch == "paper" and recipe.model.init is None  # the paper arch's own: §5's
    from alexnet_cli.models import ARCHS

    assert ARCHS["paper"].default_init == "paper"
    assert recipe.data.batch_size == 128
    assert (recipe.optim.lr, recipe.optim.momentum, recipe.optim.weight_decay) == (0.01, 0.9, 0.0005)
    assert recipe.optim.schedule == "plateau" and recipe.optim.gamma == 0.1 and recipe.optim.decay_biases is False
    assert recipe.trainer.max_epochs == 90 and recipe.trainer.precision == "bf16-mixed"


def test_the_plateau_schedule_divides_lr_by_10_at_the_first_epoch_without_a_new_best():
    recipe = load_recipe("single-gpu")
    module = AlexNetModule(build_model("keras-v2", 10), recipe.optim, num_classes=10, meta={})
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    val_errors = [0.90, 0.80, 0.80, 0.70, 0.72, 0.60, 0.60, 0.60]
    rates = []
    for error in val_errors:
        scheduler.step(error)
        rates.append(optimizer.param_groups[0]["lr"])
    # cuts after the repeated 0.80, after 0.72 (no new best), after the first repeated 0.60, and the next
    assert rates == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


@pytest.mark.parametrize("name", ["single-gpu", "two-gpu", "ddp", "hybrid", "weird-trick"])
def test_a_paper_recipe_does_not_force_the_papers_init_on_another_arch(name):
    from alexnet_cli.models import build_network

    torch.manual_seed(0)
    recipe = load_recipe(name, ["model.arch=vgg11"])
    model = build_network(recipe.model, 10)
    fc = model.classifier[0]  # torchvision's VGG head: N(0, 0.01) weights but zero biases, unlike §5's ones
    assert recipe.model.init is None and (fc.bias == 0).all()
    conv = model.features[0]  # torchvision's He-normal (fan-out) convs, not N(0, 0.01)
    assert conv.weight.std() > 0.03  # √(2 / (64·9)) = 0.059


@pytest.mark.parametrize("name", ["single-gpu", "two-gpu", "ddp", "hybrid", "weird-trick"])
def test_gpu_recipes_let_cudnn_pick_its_fastest_kernels(name, tmp_path):
    import lightning as L

    from alexnet_cli.training.trainer import trainer_arguments

    recipe = load_recipe(name, ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto"])
    assert recipe.trainer.benchmark is True
    torch.backends.cudnn.benchmark = False
    L.Trainer(**trainer_arguments(plan_run(recipe), tmp_path, True, []))
    assert torch.backends.cudnn.benchmark  # what Lightning sets from the recipe's trainer.benchmark


def test_checkpoint_keys_choose_which_checkpoints_a_run_writes(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from alexnet_cli.training.callbacks import SaveWhenTrainingEnds
    from alexnet_cli.training.trainer import trainer_arguments

    def savers(recipe):  # as the Trainer holds them: Lightning adds its own saver where it finds none
        import lightning as L

        callbacks = L.Trainer(**trainer_arguments(plan_run(recipe), tmp_path, True, [])).callbacks
        return {(type(c).__name__, getattr(c, "filename", None) or c.path.name,
                 getattr(c, "_every_n_epochs", None)) for c in callbacks
                if isinstance(c, (ModelCheckpoint, SaveWhenTrainingEnds))}

    assert savers(load_recipe("cpu-demo")) == {("SaveWhenTrainingEnds", "last.ckpt", None)}
    assert savers(load_recipe("single-gpu", ["checkpoint.every_minutes=null", "trainer.accelerator=cpu"])) == {
        ("ModelCheckpoint", "last", 1), ("ModelCheckpoint", "best", 1)}
    assert savers(load_recipe("cpu-demo", ["checkpoint.every_n_epochs=3", "checkpoint.best=true"])) == {
        ("ModelCheckpoint", "last", 3), ("ModelCheckpoint", "best", 1)}
    assert savers(load_recipe("cpu-demo", ["trainer.limit_val_batches=0", "checkpoint.best=true"])) == {
        ("SaveWhenTrainingEnds", "last.ckpt", None)}  # nothing to call best without validation


def test_overrides_are_parsed_as_yaml_values_and_validated():
    recipe = load_recipe("cpu-demo", ["optim.lr=0.02", "data.batch_size=8", "trainer.precision=32-true",
                                      "model.dropout=0", "seed=5"])
    assert recipe.optim.lr == 0.02 and recipe.data.batch_size == 8
    assert recipe.trainer.precision == "32-true"
    assert recipe.model.dropout == 0.0 and recipe.seed == 5
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float key takes it as the number users mean
    assert load_recipe("cpu-demo", ["optim.lr=1e-3"]).optim.lr == 0.001


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", "--set optim.lrr=0.1: unknown key"),
        ("data.batch_size=eight", "--set data.batch_size=eight: expected int"),
        ("optim.lr=1e-3x", "--set optim.lr=1e-3x: expected float"),
        ("data.device=tpu", "--set data.device=tpu: 'tpu' is not one of cpu, gpu"),
        ("trainer.max_epoch=3", "--set trainer.max_epoch=3: not a lightning.Trainer argument"),
        ("lr=0.1", "expected section.key=value"),
        ("optimizer.lr=0.1", "unknown section 'optimizer'"),
        ("trainer.callbacks=[]", "--set trainer.callbacks=[]: set by the tool, not by a recipe (the tool builds"),
        ("trainer.default_root_dir=x", "trainer.default_root_dir=x: set by the tool, not by a recipe (--out names"),
        ("seed=-1", "--set seed=-1: -1 is out of range: it must be in [0, 4294967295]"),
        ("seed=4294967296", "--set seed=4294967296: 4294967296 is out of range"),
        ("data.num_threads=many", "--set data.num_threads=many: expected int or auto, got 'many'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(AlexnetError, match=re.escape(message)):
        load_recipe("cpu-demo", [override])


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(AlexnetError, match="available are .*cpu-demo"):
        load_recipe("three-gpu")


def test_recipe_file_with_unknown_section_is_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  arch: paper\nschedule:\n  lr: 1\n")
    with pytest.raises(AlexnetError, match=r"mine\.yaml: schedule: unknown key \(allowed: name, description"):
        load_recipe(str(path))


def test_recipe_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(AlexnetError, match="not valid YAML"):
        load_recipe(str(path))


def test_a_binary_recipe_file_is_named_in_one_line(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(AlexnetError, match=f"recipe {path} is not UTF-8 text"):
        load_recipe(str(path))


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=inf", r"--set optim\.lr=inf: inf is not a finite number: it must be above 0"),
    ("optim.momentum=-.inf", r"--set optim\.momentum=-\.inf: -inf is not a finite number: it must be in \[0, 1\)"),
    ("data.pca_std=NaN", r"--set data\.pca_std=NaN: nan is not a finite number: it must be 0 or more"),
    ("trainer.gradient_clip_val=.inf", r"trainer\.gradient_clip_val=\.inf: inf is not a finite number"),
])
def test_non_finite_numbers_are_refused_with_the_allowed_range_from_set(override, message):
    with pytest.raises(AlexnetError, match=message):
        load_recipe("cpu-demo", [override])


def test_non_finite_numbers_are_refused_with_the_allowed_range_from_a_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optim:\n  lr: .inf\n  momentum: 0.9\n")
    with pytest.raises(AlexnetError, match=r"mine\.yaml: optim\.lr: inf is not a finite number: it must be above 0"):
        load_recipe(str(path))
    path.write_text("checkpoint:\n  every_minutes: .nan\n")
    with pytest.raises(AlexnetError, match=r"checkpoint\.every_minutes: nan is not a finite number: it must be above"):
        load_recipe(str(path))


def test_spaces_around_the_equals_sign_of_set_are_accepted():
    recipe = load_recipe("cpu-demo", ["optim.lr = 0.03", " data.batch_size= 6", "seed =7", "model.dropout =0.25"])
    assert (recipe.optim.lr, recipe.data.batch_size, recipe.seed, recipe.model.dropout) == (0.03, 6, 7, 0.25)


def test_a_key_given_twice_in_a_recipe_file_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 0.01\n  momentum: 0.9\n  lr: 0.1\ndata:\n  batch_size: 8\n")
    with pytest.raises(AlexnetError, match=r"twice\.yaml: line 4: key 'lr' is given twice \(first on line 2\)"):
        load_recipe(str(path))
    path.write_text("seed: 1\noptim:\n  lr: 0.01\nseed: 2\n")
    with pytest.raises(AlexnetError, match=r"line 4: key 'seed' is given twice \(first on line 1\)"):
        load_recipe(str(path))
    path.write_text("base: &b {lr: 0.01, momentum: 0.8}\noptim:\n  <<: *b\n  lr: 0.02\n")  # a merge is no duplicate
    with pytest.raises(AlexnetError, match="base: unknown key"):
        load_recipe(str(path))
    path.write_text("optim: {lr: 0.01, momentum: 0.9, lr: 0.1}\n")  # twice on one line
    with pytest.raises(AlexnetError, match=r"line 1: key 'lr' is given twice \(both on this line\)"):
        load_recipe(str(path))
    path.write_text("optim:\n  lr: 0.01\n  lr: 0.01\n")  # even with the same value
    with pytest.raises(AlexnetError, match=r"line 3: key 'lr' is given twice \(first on line 2\)"):
        load_recipe(str(path))


def test_mappings_merged_together_that_give_a_key_two_values_are_refused(tmp_path):
    path = tmp_path / "merged.yaml"
    anchors = "x-a: &a {lr: 0.01, momentum: 0.9}\nx-b: &b {lr: 0.1}\n"
    path.write_text(anchors + "optim:\n  <<: [*a, *b]\n")
    with pytest.raises(AlexnetError, match=r"line 4: the mappings merged here give 'lr' two values"):
        load_recipe(str(path))
    path.write_text("x-a: &a {lr: 0.01}\nx-b: &b {lr: 0.01, momentum: 0.8}\noptim:\n  <<: [*a, *b]\n")
    with pytest.raises(AlexnetError, match="x-a: unknown key"):  # agreeing merges are fine (then x-a is refused)
        load_recipe(str(path))
    path.write_text(anchors + "optim:\n  <<: *a\n  <<: *b\n")  # two merge keys: PyYAML would keep the last
    with pytest.raises(AlexnetError, match=r"line 5: '<<' is given twice in one mapping \(first on line 4\)"):
        load_recipe(str(path))
    nested = "x-a: &a {m: {y: 1}}\nx-b: &b {m: {y: 2}}\noptim:\n  <<: [*a, *b]\n"  # values that are mappings
    path.write_text(nested)
    with pytest.raises(AlexnetError, match="the mappings merged here give 'm' two values"):
        load_recipe(str(path))


def test_the_trainer_arguments_a_recipe_may_give_are_lightnings_own():
    import inspect

    import lightning

    from alexnet_cli.recipes import TRAINER_ARGUMENTS

    assert TRAINER_ARGUMENTS == set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}


def test_listing_and_showing_recipes_imports_neither_torch_nor_lightning():
    """They only read YAML: without the 5-8 s of those imports they answer at once."""
    import subprocess
    import sys

    program = ("import sys\nfrom typer.testing import CliRunner\nfrom alexnet_cli.cli import app\n"
               "for args in (['recipes'], ['recipes', 'show', 'single-gpu', '--set', 'model.lrn=false']):\n"
               "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
               "print(sorted(name for name in ('torch', 'lightning') if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_trainer_section_is_typed_and_written_back_as_the_recipe_wrote_it():
    from alexnet_cli.recipes import TrainerConfig

    written = {"precision": 16, "gradient_clip_val": 0.5, "devices": [0, 1], "accelerator": "gpu",
               "max_steps": 7, "logger": "tensorboard"}
    recipe = recipe_from_dict({"trainer": written})
    trainer = recipe.trainer
    assert isinstance(trainer, TrainerConfig)
    assert (trainer.precision, trainer.precision_name, trainer.devices, trainer.max_steps) == (16, "16", [0, 1], 7)
    assert (trainer.num_nodes, trainer.log_every_n_steps, trainer.strategy) == (1, 50, None)  # not written
    assert trainer.passed_on == {"gradient_clip_val": 0.5}
    assert list(recipe.to_dict()["trainer"].items()) == list(written.items())  # its keys, values and order
    assert trainer.lightning_arguments() == {k: v for k, v in written.items() if k != "logger"}
    assert recipe_from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()  # a saved recipe.yaml loads as it was


def test_every_trainer_key_the_tool_reads_is_a_lightning_trainer_argument_or_the_tools_own():
    import dataclasses

    from alexnet_cli.recipes import TOOL_TRAINER_KEYS, TRAINER_ARGUMENTS, TrainerConfig, load_recipe

    typed = {f.name for f in dataclasses.fields(TrainerConfig)} - {"passed_on", "written"}
    assert typed - TOOL_TRAINER_KEYS <= TRAINER_ARGUMENTS
    assert not TOOL_TRAINER_KEYS & TRAINER_ARGUMENTS
    # the tool's own keys never reach lightning.Trainer, which would refuse them
    recipe = load_recipe("ddp", ["trainer.collective_timeout_s=42"])
    assert recipe.trainer.collective_timeout_s == 42
    assert recipe.trainer.to_dict()["collective_timeout_s"] == 42
    assert "collective_timeout_s" not in recipe.trainer.lightning_arguments()


def test_the_collective_timeout_reaches_the_strategy_of_every_multi_process_layout(prepared):
    from datetime import timedelta

    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.plan import plan_run
    from alexnet_cli.training.trainer import trainer_arguments

    cpu = ["trainer.accelerator=cpu", "data.device=cpu", "trainer.precision=32-true", "trainer.devices=2"]
    for name in ("ddp", "two-gpu", "weird-trick"):
        plan = plan_run(load_recipe(name, [*cpu, "trainer.collective_timeout_s=7.5"]))
        strategy = trainer_arguments(plan, prepared, True, [], print)["strategy"]
        assert strategy._timeout == timedelta(seconds=7.5), name
    one = plan_run(load_recipe("cpu-demo", ["trainer.collective_timeout_s=7.5"]))
    assert trainer_arguments(one, prepared, True, [], print)["strategy"] == "auto"
