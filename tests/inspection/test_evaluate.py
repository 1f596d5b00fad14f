"""eval of a trained run: the report it writes, a damaged image left out and named, ten crops averaged as the
paper averages them, and the same counts on two processes."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke_alexnet
from PIL import Image

from alexnet_cli.inspection.evaluate import evaluate
from alexnet_cli.models.checkpoints import load_checkpoint


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
    normalization = loaded.meta.input.input_normalization()
    mean = torch.tensor(normalization.channel_mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(normalization.channel_std, dtype=torch.float32)[:, None, None]
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


def test_eval_on_two_processes_counts_each_image_once_and_agrees(trained_run, prepared):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    one = evaluate(prepared, checkpoint=checkpoint, ten_crop=False, batch_size=5)
    two = evaluate(prepared, checkpoint=checkpoint, ten_crop=False, batch_size=5, devices=2)
    assert two.images == one.images == 12
    assert two.top1 == one.top1 and two.top5 == one.top5
    assert two.per_class_top1 == one.per_class_top1


def test_a_packed_dataset_evaluates_with_ten_crops_exactly_as_its_files(trained_run, prepared, packed):
    out, _ = trained_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    results = [evaluate(data, checkpoint=checkpoint, ten_crop=True, batch_size=5, num_threads=1,
                        with_predictions=True) for data in (prepared, packed)]
    files, shards = results
    assert (files.images, files.top1, files.top5) == (shards.images, shards.top1, shards.top5) == (12, files.top1,
                                                                                                   files.top5)
    assert [(p["label"], p["top5"]) for p in files.predictions] == [(p["label"], p["top5"]) for p in shards.predictions]
    assert shards.predictions[0]["file"].startswith(f"{packed}/val/000000.tar:")  # named by shard and member
