"""The real command line end to end on a tiny dataset: train a few steps, eval, filters, load_model."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NARROW_FC, invoke_alexnet, scratch_dir
from PIL import Image

import alexnet_cli
from alexnet_cli.inspection.evaluate import evaluate
from alexnet_cli.models.checkpoints import load_checkpoint

FAST = ["--set", "trainer.max_epochs=1", "--set", "trainer.limit_train_batches=3", "--set", "data.batch_size=4",
        "--set", "trainer.log_every_n_steps=1",
        "--set", "model.num_classes=4", *NARROW_FC]


@pytest.fixture(scope="module")
def trained_run(prepared, tmp_path_factory):
    with scratch_dir(tmp_path_factory, "run") as out:
        result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", prepared, "--out", out, "--quiet", *FAST,
                                "--json", out / "train.json")
        assert result.returncode == 0, result.stderr[-3000:]
        yield out, result


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


def test_checkpoint_records_version_arch_classes_and_recipe(trained_run, prepared):
    out, _ = trained_run
    loaded = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert loaded.meta["version"] == alexnet_cli.__version__
    assert loaded.arch == "paper" and loaded.meta["num_classes"] == 4
    assert loaded.wnids == sorted(p.name for p in (prepared / "train").iterdir())
    assert loaded.meta["recipe"]["optim"]["lr"] == 0.003


def test_load_model_gives_an_eval_mode_model_with_the_trained_weights(trained_run):
    out, _ = trained_run
    model = alexnet_cli.load_model(out / "checkpoints" / "last.ckpt")
    assert not model.training
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(model.features.conv1.weight, state["model.features.conv1.weight"])


def test_eval_json_has_the_documented_fields(trained_run, prepared, tmp_path):
    out, _ = trained_run
    report = tmp_path / "eval.json"
    predictions = tmp_path / "predictions.csv"
    result = invoke_alexnet("eval", "--checkpoint", out / "checkpoints" / "last.ckpt", "--data", prepared,
                            "--ten-crop", "--json", report, "--quiet", "--batch-size", "5",
                            "--predictions", predictions)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["images"] == 12 and data["ten_crop"] is True and data["arch"] == "paper"
    assert 0 <= data["top1"] <= data["top5"] <= 1
    rows = list(csv.DictReader(predictions.open()))
    assert len(rows) == 12
    # Top-k counted independently from each image's ranking; with 4 classes every label is in the top 5.
    assert data["top1"] == pytest.approx(sum(r["top1"] == r["label"] for r in rows) / 12)
    assert data["top5"] == pytest.approx(sum(r["label"] in r["top5"].split() for r in rows) / 12) == 1.0
    assert data["top1_error"] == pytest.approx(1 - data["top1"])
    assert set(data["per_class_top1"]) == {p.name for p in (prepared / "val").iterdir()}
    assert "paper, 1 CNN" in result.stdout


def test_eval_leaves_out_a_damaged_image_and_names_it(trained_run, prepared, tmp_path):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    damaged = tmp_path / "damaged"
    shutil.copytree(prepared, damaged, symlinks=True)
    victim = min((damaged / "val").rglob("*.JPEG"))
    victim.write_bytes(victim.read_bytes()[:300])  # cut short after preparation
    runs = {}
    for name, data in (("clean", prepared), ("damaged", damaged)):
        result = invoke_alexnet("eval", "--checkpoint", checkpoint, "--data", data, "--center-crop", "--quiet",
                                "--json", tmp_path / f"{name}.json", "--predictions", tmp_path / f"{name}.csv")
        assert result.returncode == 0, result.stderr[-2000:]
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text()), result.stderr
    (clean, _), (report, stderr) = runs["clean"], runs["damaged"]
    assert clean["skipped"] == [] and report["skipped"] == [str(victim)]
    assert report["images"] == clean["images"] - 1
    assert "skipped 1 image(s) that could not be used" in stderr and str(victim) in stderr
    # the others score as before: the damaged image neither counts nor has a stand-in scored in its place
    with open(tmp_path / "clean.csv") as clean_csv, open(tmp_path / "damaged.csv") as damaged_csv:
        before = {Path(r["file"]).name: r for r in csv.DictReader(clean_csv)}
        after = {Path(r["file"]).name: r for r in csv.DictReader(damaged_csv)}
    assert set(before) - set(after) == {victim.name}
    assert all(after[name] == {**before[name], "file": after[name]["file"]} for name in after)
    victim_hit = before[victim.name]["label"] == before[victim.name]["top1"]
    assert round(report["top1"] * report["images"]) == round(clean["top1"] * clean["images"]) - victim_hit


def test_ten_crops_average_softmax_probabilities_not_logits():
    from torch import nn

    from alexnet_cli.inspection.evaluate import _probabilities

    # One crop is very sure of class 0; nine mildly prefer class 1. Averaged logits pick class 0, averaged
    # probabilities (the paper's "averaging the predictions") pick class 1.
    crops = torch.tensor([[100.0, 0.0, 0.0]] + [[0.0, 1.0, 0.0]] * 9)
    scores = _probabilities(nn.Flatten(), crops[None])
    assert crops.mean(0).argmax() == 0 and scores.argmax(dim=1).tolist() == [1]
    torch.testing.assert_close(scores[0], crops.softmax(dim=1).mean(0))


def test_ten_crop_scores_average_each_images_own_crops_in_a_batch_of_several():
    from torch import nn

    from alexnet_cli.inspection.evaluate import _probabilities

    # 3 images × 10 crops × 5 classes, every crop different: a mean over the wrong axis, or over crops of
    # several images, gives other numbers; image i's crops all favour class i, so the top-1s must be 0, 1, 2.
    crops = torch.randn(3, 10, 5, generator=torch.Generator().manual_seed(0))
    for image in range(3):
        crops[image, :, image] += 4.0
    scores = _probabilities(nn.Flatten(), crops)
    assert scores.shape == (3, 5) and scores.argmax(dim=1).tolist() == [0, 1, 2]
    torch.testing.assert_close(scores, crops.softmax(dim=2).mean(dim=1))


def test_ten_crop_eval_equals_an_independent_torchvision_ten_crop(trained_run, prepared):
    import torchvision.transforms.functional as TF

    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    ours = evaluate(prepared, checkpoint=checkpoint, ten_crop=True, batch_size=6)
    loaded = load_checkpoint(checkpoint)
    mean = torch.tensor(loaded.meta["normalization"]["channel_mean"])[:, None, None]
    std = torch.tensor(loaded.meta["normalization"]["channel_std"])[:, None, None]
    wnids = loaded.wnids
    hits = 0
    images = sorted((prepared / "val").glob("*/*.JPEG"))
    with torch.no_grad():
        for path in images:
            pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()
            crops = torch.stack(TF.ten_crop(pixels, [227, 227]))
            probabilities = loaded.model((crops - mean) / std).softmax(1).mean(0)
            hits += int(probabilities.argmax() == wnids.index(path.parent.name))
    assert ours.images == len(images)
    assert abs(ours.top1 - hits / len(images)) <= 1 / len(images)


def test_viz_filters_writes_a_png_of_two_tower_blocks(trained_run, tmp_path):
    out, _ = trained_run
    png = tmp_path / "filters.png"
    result = invoke_alexnet("viz-filters", "--checkpoint", out / "checkpoints" / "last.ckpt", "--out", png,
                            "--scale", "2")
    assert result.returncode == 0, result.stderr
    with Image.open(png) as image:
        # 16 columns of 22-px tiles with 2-px gaps; 2 blocks of 3 rows with an 8-px gap between blocks
        assert image.size == (2 + 16 * 24, 2 + 6 * 24 + 8)


def test_predict_names_the_top_classes_of_an_image(trained_run, prepared, tmp_path):
    out, _ = trained_run
    image = sorted((prepared / "val").glob("*/*.JPEG"))[0]
    report = tmp_path / "p.json"
    result = invoke_alexnet("predict", "--checkpoint", out / "checkpoints" / "last.ckpt", image, "--top", "3",
                            "--json", report)
    assert result.returncode == 0, result.stderr
    top = json.loads(report.read_text())["predictions"][0]["classes"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["words"].startswith("demo ")


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
    assert loaded.arch == "owt" and loaded.meta["crop"] == 224


def test_neighbors_finds_a_training_query_first_and_caches_the_codes(trained_run, prepared, tmp_path):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    query = sorted((prepared / "train").glob("*/*.JPEG"))[5]
    grid = tmp_path / "grid.png"
    result = invoke_alexnet("neighbors", "--checkpoint", checkpoint, "--data", prepared, "--query", query,
                            "--k", "3", "--out", grid, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(f"{checkpoint}.train-fc7.f16").is_file()
    from alexnet_cli.inspection.neighbors import find_neighbours

    [found] = find_neighbours(checkpoint, prepared, [query], k=3)
    assert found.neighbours[0][0] == str(query)
    with Image.open(grid) as image:
        assert image.size == (4 + 4 * (96 + 4), 4 + 96 + 4)


def test_neighbors_of_a_read_only_checkpoint_skip_a_damaged_training_image(trained_run, prepared, tmp_path,
                                                                           monkeypatch):
    import subprocess

    out, _ = trained_run
    shared = tmp_path / "shared-models"
    shared.mkdir()
    os.link(out / "checkpoints" / "last.ckpt", shared / "model.ckpt")
    data = tmp_path / "data"
    shutil.copytree(prepared, data, symlinks=True)
    victim = sorted((data / "train").glob("*/*.JPEG"))[5]
    query = tmp_path / "query.JPEG"
    query.write_bytes(victim.read_bytes())
    victim.write_bytes(victim.read_bytes()[:300])  # damaged after preparation
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if subprocess.run(["chattr", "+i", shared], capture_output=True).returncode != 0:
        pytest.skip("chattr +i (a folder even root cannot write) is not available here")
    from alexnet_cli.inspection.neighbors import find_neighbours

    try:
        with pytest.warns(UserWarning, match="not a whole JPEG; it is left out"):
            [found] = find_neighbours(shared / "model.ckpt", data, [query], k=30, out=tmp_path / "grid.png")
    finally:
        subprocess.run(["chattr", "-i", shared], check=True)
    assert list((tmp_path / "cache" / "alexnet-cli" / "neighbors").glob("model.ckpt-*.train-fc7.f16"))
    names = [path for path, _ in found.neighbours]
    assert str(victim) not in names  # the damaged file is nobody's neighbour, and the grid was drawn
    assert len(names) == len(list((data / "train").glob("*/*.JPEG"))) - 1
    assert (tmp_path / "grid.png").is_file()


def test_an_interrupted_embedding_continues_from_the_rows_already_written(trained_run, prepared, tmp_path):
    import shutil

    from alexnet_cli.inspection.neighbors import embed_training_set
    from alexnet_cli.models.checkpoints import load_checkpoint

    out, _ = trained_run
    checkpoint = tmp_path / "copy.ckpt"
    shutil.copy(out / "checkpoints" / "last.ckpt", checkpoint)
    loaded = load_checkpoint(checkpoint)
    store, _ = embed_training_set(loaded, checkpoint, prepared, batch_size=4)
    reference = store.read(0, store.rows)
    store.write(0, np.full_like(reference, 7.0))  # an interruption after two batches: rows 0-7 kept, the rest not
    store.mark_done(8)
    resumed, _ = embed_training_set(loaded, checkpoint, prepared, batch_size=4)
    assert resumed.complete and (resumed.read(0, 8) == 7.0).all(), "finished rows are not redone"
    np.testing.assert_array_equal(resumed.read(8, resumed.rows), reference[8:])


def test_eval_on_two_processes_counts_each_image_once_and_agrees(trained_run, prepared):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    one = evaluate(prepared, checkpoint=checkpoint, ten_crop=False, batch_size=5)
    two = evaluate(prepared, checkpoint=checkpoint, ten_crop=False, batch_size=5, devices=2)
    assert two.images == one.images == 12
    assert two.top1 == one.top1 and two.top5 == one.top5
    assert two.per_class_top1 == one.per_class_top1


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


def test_neighbors_embeds_again_when_its_cached_codes_are_not_finite(trained_run, prepared, tmp_path):
    out, _ = trained_run
    checkpoint = tmp_path / "model.ckpt"  # its own code cache, beside it
    os.link(out / "checkpoints" / "last.ckpt", checkpoint)
    query = sorted((prepared / "train").glob("*/*.JPEG"))[7]
    arguments = ["neighbors", "--checkpoint", checkpoint, "--data", prepared, "--query", query, "--k", "4",
                 "--out", tmp_path / "grid.png", "--quiet"]
    assert invoke_alexnet(*arguments).returncode == 0
    codes = Path(f"{checkpoint}.train-fc7.f16")
    healthy = codes.read_bytes()
    np.full(len(healthy) // 2, np.nan, np.float16).tofile(codes)  # every row "unreadable": nothing to search
    result = invoke_alexnet(*arguments)
    assert result.returncode == 0, result.stderr
    assert f"{codes} holds no usable code; embedding the training images again" in result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert len(rows) == 4 and rows[0].endswith(" 0.00 │")  # the query itself first, then three more
    assert codes.read_bytes() == healthy


def test_neighbors_of_a_checkpoint_with_nan_weights_is_refused_naming_it(trained_run, prepared, tmp_path):
    out, _ = trained_run
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    for name, tensor in state["state_dict"].items():
        if name.startswith("model.classifier") and name.endswith("weight"):
            tensor.fill_(float("nan"))  # a diverged run's weights
    checkpoint = tmp_path / "diverged.ckpt"
    torch.save(state, checkpoint)
    query = sorted((prepared / "val").glob("*/*.JPEG"))[0]
    result = invoke_alexnet("neighbors", "--checkpoint", checkpoint, "--data", prepared, "--query", query,
                            "--out", tmp_path / "grid.png", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {checkpoint} gives {query} fc7 activations that are NaN, infinite or "
                                    "beyond float16's 65,504: a diverged checkpoint?")
    assert not Path(f"{checkpoint}.train-fc7.f16").exists()
