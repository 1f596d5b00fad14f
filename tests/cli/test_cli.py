"""The command line's surface: help that teaches, a version, and one-line errors."""

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import NARROW_FC, invoke_alexnet, one_line_error, run_alexnet
from typer.main import get_command
from typer.testing import CliRunner

from alexnet_cli import __version__
from alexnet_cli.cli import app

runner = CliRunner()
TESTS = Path(__file__).parents[1]


def command_paths(group=None, prefix=()) -> list[tuple[str, ...]]:
    """Every runnable command of the app, as the words that name it: ("eval",), ("benchmark", "data"), ..."""
    group = group or get_command(app)
    paths = []
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        paths += ([prefix + (name,)] if not sub or getattr(command, "invoke_without_command", False) else [])
        paths += command_paths(command, prefix + (name,)) if sub else []
    return paths


COMMANDS = command_paths()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for path in COMMANDS:
        assert path[0] in result.output
    assert {"prepare-imagenet", "train", "eval", "viz-filters", "demo"} <= {path[0] for path in COMMANDS}


@pytest.mark.parametrize("path", [p for p in COMMANDS if p != ("recipes",)], ids=" ".join)
def test_every_command_help_shows_an_example(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "alexnet " in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_is_run_by_some_test(path):
    """A command in 'alexnet --help' that no test runs (in a process or through CliRunner) is untested."""
    words = r"\s*,\s*".join(f'"{word}"' for word in path)
    launch = r'(run_alexnet\(|invoke_alexnet\(|invoke\(app,\s*\[|"alexnet_cli",\s*)(\s*"--debug",)?\s*'
    sources = [f.read_text() for f in TESTS.rglob("test_*.py")]
    assert any(re.search(launch + words, text) for text in sources), f"no test runs 'alexnet {' '.join(path)}'"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_summary_prints_the_papers_parameter_total():
    result = runner.invoke(app, ["summary", "--arch", "paper"])
    assert result.exit_code == 0
    assert "total parameters: 60,965,224" in result.output
    assert "total neurons: 659,272" in result.output


def test_recipes_list_and_show():
    listed = runner.invoke(app, ["recipes"], terminal_width=80)
    assert "cpu-demo" in listed.output and "single-gpu" in listed.output
    for value in ("model.lrn=false", "model.overlap_pool=false", "model.arch=paper-one-tower"):
        assert value in listed.output  # whole at 80 columns, to copy
    shown = runner.invoke(app, ["recipes", "show", "single-gpu"])
    assert shown.exit_code == 0 and "weight_decay: 0.0005" in shown.output and "pca_std: 0.1" in shown.output


@pytest.mark.parametrize(("args", "words"), [
    (["train", "--bogus"], "error: No such option: --bogus (Possible options: --out) (see 'alexnet train --help')"),
    (["eval"], "error: Missing option '--data'. (see 'alexnet eval --help')"),
    (["benchmark", "traffic", "--batch", "x"], "error: Invalid value for '--batch'")])
def test_click_usage_errors_are_one_line_like_every_other_error(args, words):
    result = run_alexnet(*args, timeout=60)
    assert result.returncode == 2 and result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(words) and not result.stdout


def test_missing_dataset_is_one_line(tmp_path):
    one_line_error(invoke_alexnet("train", "--recipe", "cpu-demo", "--data", tmp_path / "nope"), "classes.json")


def test_bad_set_value_is_one_line(prepared):
    one_line_error(invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--set", "data.batch_size=x"),
                   "data.batch_size")


def test_missing_checkpoint_is_one_line(prepared, tmp_path):
    one_line_error(invoke_alexnet("eval", "--checkpoint", tmp_path / "none.ckpt", "--data", prepared), "none.ckpt")


def test_checkpoint_carrying_a_pickle_payload_is_refused_and_never_runs(prepared, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as handle:
        pickle.dump({"state_dict": {}, "alexnet_cli": Payload()}, handle)
    torch.save({"x": 1}, tmp_path / "fine.pt")  # torch's own format must still be accepted as a file type
    one_line_error(invoke_alexnet("eval", "--checkpoint", evil, "--data", prepared), "refused")
    assert not marker.exists()


def test_one_class_dataset_is_one_line(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps([{"index": 0, "wnid": "n00000001", "words": "x"}]))
    one_line_error(invoke_alexnet("train", "--recipe", "cpu-demo", "--data", tmp_path), "at least 2")


def test_debug_shows_the_traceback(tmp_path):
    result = run_alexnet("--debug", "train", "--recipe", "cpu-demo", "--data", tmp_path)  # what a user's shell shows
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_eval_on_a_dataset_with_other_classes_is_one_line(prepared, official_source, tmp_path):
    from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet
    from alexnet_cli.models import build_model

    other = tmp_path / "other"
    prepare_imagenet(PrepareOptions(official_source, other, workers=1, classes=2))
    checkpoint = tmp_path / "c.ckpt"
    classes = [{"index": i, "wnid": p.name, "words": ""} for i, p in enumerate(sorted((prepared / "train").iterdir()))]
    state = {f"model.{k}": v for k, v in build_model("keras-v2", 4).state_dict().items()}
    torch.save({"state_dict": state, "alexnet_cli": {"arch": "keras-v2", "num_classes": 4, "classes": classes,
                                                     "crop": 224}}, checkpoint)
    one_line_error(invoke_alexnet("eval", "--checkpoint", checkpoint, "--data", other), "other classes")


def test_train_dry_run_prints_the_plan_and_trains_nothing(prepared, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [{"arch": "paper", "train_img_s": 100.0}]}))
    result = runner.invoke(app, ["train", "--recipe", "ddp", "--data", str(prepared), "--dry-run",
                                 "--set", "trainer.devices=2", "--set", "data.batch_size=4",
                                 "--benchmark-json", str(bench), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "global batch" in result.output and "8" in result.output
    assert "steps per epoch" in result.output and "estimated time" in result.output
    assert not (tmp_path / "run").exists()


def documented_slurm_arguments(prepared, run_dir) -> list[str]:
    """The 'alexnet train' line of docs/ddp.sbatch, pointed at the test dataset."""
    import shlex
    from pathlib import Path

    script = (Path(__file__).parents[2] / "docs" / "ddp.sbatch").read_text()
    line = script[script.index("srun alexnet train"):].replace("\\\n", " ").splitlines()[0]
    args = [a for a in shlex.split(line)[2:] if a != "${RESUME[@]}"]
    args[args.index("--data") + 1], args[args.index("--out") + 1] = str(prepared), str(run_dir)
    return args + ["--set", "data.batch_size=1"]  # 16 devices share the test's 23 training images


def test_the_documented_slurm_line_passes_a_dry_run(prepared, tmp_path):
    args = documented_slurm_arguments(prepared, tmp_path / "run")
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "16 (16 data-parallel)" in result.output


def test_a_dry_run_refuses_what_train_would_refuse(prepared, tmp_path):
    args = documented_slurm_arguments(prepared, tmp_path / "run")
    result = runner.invoke(app, [*args, "--set", "checkpoint.every_n_train_steps=1000", "--dry-run"])
    assert result.exit_code == 2 and "every_n_train_steps and checkpoint.every_minutes: set one" in result.output


def _copy_dataset(prepared, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    return copy


def test_a_dataset_without_training_images_is_one_line(prepared, tmp_path):
    empty = _copy_dataset(prepared, tmp_path)
    for image in (empty / "train").rglob("*.JPEG"):
        image.unlink()
    result = runner.invoke(app, ["train", "--recipe", "cpu-demo", "--data", str(empty), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "train holds no JPEG images" in result.stderr


@pytest.mark.parametrize("setting, words", [("data.resize_size=200", "exceeds data.resize_size 200"),
                                            ("data.batch_size=64", "cannot fill one batch of 64")])
def test_sizes_the_dataset_cannot_serve_are_one_line(prepared, tmp_path, setting, words):
    result = runner.invoke(app, ["train", "--recipe", "cpu-demo", "--data", str(prepared), "--set", setting,
                                 "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert words in result.stderr


def test_an_image_of_the_wrong_size_is_stood_in_for_and_named_once(prepared, tmp_path):
    from PIL import Image

    broken = _copy_dataset(prepared, tmp_path)
    misfit = min((broken / "train").rglob("*.JPEG"))
    Image.new("RGB", (300, 180), (200, 10, 10)).save(misfit, quality=90)
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", broken, "--quiet", *NARROW_FC,
                            "--set", "data.batch_size=23", "--set", "trainer.max_epochs=2",
                            "--set", "trainer.limit_val_batches=0", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    # invoke_alexnet shows every warning raised: "once" is the loader's doing, though both epochs read the image
    assert result.stderr.count(f"{misfit} is 300×180 pixels, but this dataset's images are 256×256") == 1


def test_shown_escapes_markup_and_writes_control_characters_visibly():
    from rich.console import Console

    from alexnet_cli.terminal import shown

    console = Console(record=True, width=200, color_system=None)
    console.print(shown("[/bold] [link=file:///etc/passwd]x[/link] \x1b]0;t\x07 \x9b\nkept"))
    assert console.export_text() == "[/bold] [link=file:///etc/passwd]x[/link] \\x1b]0;t\\x07 \\x9b\nkept\n"


@pytest.mark.parametrize("setting, words", [
    ("data.batch_size=0", "--set data.batch_size=0: 0 is out of range: it must be at least 1"),
    ("data.batch_size=-4", "--set data.batch_size=-4: -4 is out of range"),
    ("optim.lr=0", "--set optim.lr=0: 0.0 is out of range: it must be above 0"),
    ("trainer.devices=0", "--set trainer.devices=0: 0 is out of range"),
    ("trainer.precision=fp8", "--set trainer.precision=fp8: 'fp8' is out of range: it must be one of 32-true"),
    ("trainer.max_epochs=0", "--set trainer.max_epochs=0: 0 is out of range: it must be at least 1"),
    ("trainer.accelerator=gpu", "trainer.accelerator=gpu: this machine has no CUDA GPU"),
])
def test_bad_values_are_one_line_naming_the_set_in_train_and_the_dry_run_alike(prepared, tmp_path, setting, words):
    arguments = ["train", "--recipe", "cpu-demo", "--data", str(prepared), "--set", "data.batch_size=4",
                 "--set", setting, "--out", str(tmp_path / "r"), "--quiet"]
    if torch.cuda.is_available() and "accelerator" in setting:
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert not (tmp_path / "r").exists()
    if "accelerator" not in setting:  # a dry run on a login node without GPUs checks a GPU recipe
        dry = runner.invoke(app, [*arguments, "--dry-run"])
        assert dry.exit_code == 2 and words in dry.stderr, dry.stderr


@pytest.mark.parametrize("arguments, words", [
    (["eval", "--checkpoint", "c.ckpt", "--data", "d", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["predict", "--checkpoint", "c.ckpt", "x.jpg", "--top", "0"], "--top 0: must be at least 1"),
    (["summary", "--num-classes", "0"], "--num-classes 0: must be at least 1"),
    (["benchmark", "model", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["viz-filters", "--checkpoint", "c.ckpt", "--scale", "100000"], "--scale 100000: must be between 1 and 64"),
    (["neighbors", "--checkpoint", "c.ckpt", "--data", "d", "--query", "q.jpg", "--k", "0"], "--k 0: must be"),
])
def test_out_of_range_options_are_one_line_before_any_work(arguments, words):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_damaged_checkpoints_and_statistics_are_named_in_one_line(prepared, tmp_path):
    import random

    (tmp_path / "empty.ckpt").write_bytes(b"")
    one_line_error(invoke_alexnet("eval", "--checkpoint", tmp_path / "empty.ckpt", "--data", prepared),
                   str(tmp_path / "empty.ckpt"), "is empty (0 bytes)")
    for seed in range(6):  # random bytes fail in torch.load's unpickler or its archive reader: one message
        damaged = tmp_path / f"random{seed}.ckpt"
        damaged.write_bytes(random.Random(seed).randbytes(4096))
        result = runner.invoke(app, ["eval", "--checkpoint", str(damaged), "--data", str(prepared)])
        assert result.exit_code == 2 and f"{damaged} is not a PyTorch checkpoint (or is damaged)" in result.stderr
    one_line_error(invoke_alexnet("predict", "--checkpoint", tmp_path / "empty.ckpt", tmp_path), "is empty")
    broken = _copy_dataset(prepared, tmp_path)
    (broken / "stats.npz").write_bytes(b"PK\x03\x04 not really a zip")
    result = runner.invoke(app, ["train", "--recipe", "cpu-demo", "--data", str(broken), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "stats.npz is not a valid statistics file" in result.stderr, result.stderr
    (broken / "stats.npz").unlink()
    result = runner.invoke(app, ["train", "--recipe", "cpu-demo", "--data", str(broken), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "stats.npz not found" in result.stderr, result.stderr


def test_a_class_without_training_images_is_named(prepared, tmp_path):
    broken = _copy_dataset(prepared, tmp_path)
    victim = min((broken / "train").iterdir())
    for image in victim.iterdir():
        image.unlink()
    result = runner.invoke(app, ["train", "--recipe", "cpu-demo", "--data", str(broken), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and f"class {victim.name} of classes.json has no training images" in result.stderr


def test_predict_refuses_a_folder_and_an_image_too_thin_to_crop(trained_checkpoint_free_model, tmp_path):
    from PIL import Image

    checkpoint = trained_checkpoint_free_model
    one_line_error(invoke_alexnet("predict", "--checkpoint", checkpoint, tmp_path), "is a folder: give image files")
    thin = tmp_path / "thin.png"
    Image.new("RGB", (10000, 10), "white").save(thin)
    one_line_error(invoke_alexnet("predict", "--checkpoint", checkpoint, thin), "10000×10 pixels: more than 20 times")



def test_predict_classifies_every_usable_image_and_lists_the_unusable_ones(trained_checkpoint_free_model, prepared,
                                                                          tmp_path):
    from PIL import Image

    good = sorted((prepared / "val").glob("*/*.JPEG"))[:2]
    garbage, thin, png = tmp_path / "garbage.jpg", tmp_path / "thin.png", tmp_path / "grey.png"
    garbage.write_bytes(b"not an image at all")
    Image.new("RGB", (10000, 10), "white").save(thin)
    Image.new("L", (300, 240), 90).save(png)
    out = tmp_path / "predictions.json"
    result = invoke_alexnet("predict", "--checkpoint", trained_checkpoint_free_model, good[0], garbage, png, thin,
                            good[1], "--top", "2", "--json", out)
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    assert [p["image"] for p in saved["predictions"]] == [str(good[0]), str(png), str(good[1])]
    assert all(len(p["classes"]) == 2 for p in saved["predictions"])
    assert [u["image"] for u in saved["unusable"]] == [str(garbage), str(thin)]
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"skipped {garbage}: unreadable") and str(thin) in lines[1]
    one_line_error(invoke_alexnet("predict", "--checkpoint", trained_checkpoint_free_model, garbage, thin),
                   f"{garbage}: unreadable", "the 1 other image(s) could not be used either")


@pytest.fixture
def trained_checkpoint_free_model(prepared, tmp_path):
    """A checkpoint of the tool's format without training: one step at lr 1e-9 would cost 15 s more."""
    from alexnet_cli.data.dataset_files import read_classes
    from alexnet_cli.models import build_model

    classes = [vars(c) for c in read_classes(prepared)]
    meta = {"arch": "paper", "num_classes": len(classes), "classes": classes, "crop": 227, "resize_size": 256,
            "normalization": {"channel_mean": [120.0] * 3, "channel_std": [60.0] * 3}}
    model = build_model("paper", len(classes))
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "alexnet_cli": meta}, path)
    return path


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_partial_file(prepared, tmp_path):
    import resource
    import subprocess
    import sys

    def small_files() -> None:  # a 64 MB file size limit: a paper checkpoint (~0.45 GB) cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))

    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "alexnet_cli", "train", "--recipe", "cpu-demo", "--data",
                             str(prepared), "--out", str(out), "--quiet", "--set", "trainer.max_steps=1",
                             "--set", "data.batch_size=4", "--set", "trainer.limit_val_batches=0"],
                            capture_output=True, text=True, preexec_fn=small_files, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: could not write {out / 'checkpoints' / 'last.ckpt'}: the disk is full")
    assert "Traceback" not in result.stderr
    assert not list((out / "checkpoints").glob(".*.tmp")) and not (out / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(("path", "option", "choices"), [
    (("eval",), "--device", "cpu|gpu"), (("neighbors",), "--device", "cpu|gpu"),
    (("benchmark", "data"), "--device", "cpu|gpu"), (("benchmark", "model"), "--device", "cpu|gpu"),
    (("benchmark", "model"), "--precision", "32|bf16-mixed|16-mixed")])
def test_closed_choices_are_listed_in_help_and_anything_else_is_refused(path, option, choices):
    assert choices in runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
    refused = runner.invoke(app, [*path, option, "tpu"])
    assert refused.exit_code == 2 and "'tpu' is not one of" in refused.output


def test_a_batch_the_machine_cannot_allocate_is_one_line():
    result = invoke_alexnet("benchmark", "model", "--batch-size", "100000000", "--batches", "1", "--warmup", "0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: out of memory (tried to allocate 61.8 TB): the batch does not fit; "
                                    "use a smaller batch size"), result.stderr
