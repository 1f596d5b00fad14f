"""The real command line end to end on a tiny dataset: a short training run and what it leaves behind (the run
directory, the checkpoint's record, ``load_model``), what predict prints, torchvision's weights, TensorBoard.

What the inspection commands do with a trained run is tested beside them, in tests/inspection/."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import NARROW_FC, invoke_alexnet

import alexnet_cli
from alexnet_cli.models.checkpoints import load_checkpoint


def test_train_writes_the_run_directory(trained_run):
    out, result = trained_run
    assert (out / "recipe.yaml").is_file()
    # cpu-demo writes what eval and viz-filters need, once (455 MB at full width), not two files every epoch
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 3 and all(np.isfinite(losses))
    val = [r for r in rows if r.get("val/top1")]
    assert val and float(val[-1]["val/images"]) == 12  # every val image counted once
    assert "img/s" in result.stdout
    summary = json.loads((out / "train.json").read_text())
    assert summary["global_step"] == 3 and summary["images_per_second"] > 0 and summary["best_top1"] is not None
    assert summary["best_epoch"] == 1  # the first epoch, as the report's curves count (metrics.csv: epoch 0)


def test_checkpoint_records_version_arch_classes_and_recipe(trained_run, prepared):
    out, _ = trained_run
    loaded = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert loaded.meta.version == alexnet_cli.__version__
    assert loaded.arch == "paper" and loaded.meta.num_classes == 4
    assert loaded.wnids == sorted(p.name for p in (prepared / "train").iterdir())
    assert loaded.meta.recipe["optim"]["lr"] == 0.003


def test_load_model_gives_an_eval_mode_model_with_the_trained_weights(trained_run):
    out, _ = trained_run
    model = alexnet_cli.load_model(out / "checkpoints" / "last.ckpt")
    assert not model.training
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(model.features.conv1.weight, state["model.features.conv1.weight"])


HOSTILE_WORDS = ["[/bold] x", "[link=file:///etc/passwd]click[/link]", "\x1b]0;pwned\x07title", "\x1b[31mred"]


def test_class_names_and_file_names_print_as_text_never_as_markup_or_terminal_codes(trained_run, prepared, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line: the texts are not wrapped
    out, _ = trained_run
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    for entry, words in zip(state["alexnet_cli"]["classes"], HOSTILE_WORDS):
        entry["words"] = words
    checkpoint = tmp_path / "hostile.ckpt"
    torch.save(state, checkpoint)
    image = tmp_path / "a [" / "b] [link=x].jpg"  # the path reads a [/b] [link=x].jpg
    image.parent.mkdir()
    image.write_bytes(sorted((prepared / "val").glob("*/*.JPEG"))[0].read_bytes())
    result = invoke_alexnet("predict", "--checkpoint", checkpoint, image, "--top", "4")
    assert result.returncode == 0, result.stderr
    assert "a [/b] [link=x].jpg" in " ".join(result.stdout.split())  # (the title may wrap)
    assert "[/bold] x" in result.stdout and "[link=file:///etc/passwd]click[/link]" in result.stdout
    assert "\x1b" not in result.stdout and "\\x1b]0;pwned\\x07title" in result.stdout
    missing = invoke_alexnet("predict", "--checkpoint", checkpoint, tmp_path / "no [/such] \x1b[2J.jpg")
    assert missing.returncode == 2 and "no [/such] \\x1b[2J.jpg" in missing.stderr and "\x1b" not in missing.stderr


def test_torchvision_weights_load_into_owt_and_give_torchvisions_logits(tmp_path):
    import torchvision

    from alexnet_cli.models.checkpoints import load_torchvision_weights

    reference = torchvision.models.alexnet(num_classes=4).eval()
    torch.save(reference.state_dict(), tmp_path / "alexnet.pth")
    loaded = load_torchvision_weights(tmp_path / "alexnet.pth", [])
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(loaded.model(x), reference(x))
    assert loaded.arch == "owt" and loaded.meta.input.crop == 224


def test_tensorboard_logger_gets_the_conv1_filter_image_each_epoch(prepared, tmp_path):
    pytest.importorskip("tensorboard")  # optional for users; the [test] extra installs it, so CI runs this
    out = tmp_path / "tb"
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--quiet",
                            "--set", "trainer.logger=tensorboard", "--set", "trainer.max_epochs=1",
                            "--set", "trainer.limit_train_batches=1", "--set", "trainer.limit_val_batches=1",
                            "--set", "data.batch_size=4", *NARROW_FC)
    assert result.returncode == 0, result.stderr[-2000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "conv1_filters" in events.Tags()["images"]
    assert (out / "metrics.csv").is_file()  # CSV stays on beside TensorBoard
