"""The benchmark commands run and report their fields (speed itself is never asserted)."""

import json

import pytest
import torch
from conftest import NARROW_FC, invoke_alexnet, one_line_error


def test_benchmark_data_reports_both_loaders_and_their_workers(prepared, packed, tmp_path):
    report = tmp_path / "data.json"
    result = invoke_alexnet("benchmark", "data", "--data", prepared, "--batch-size", "4", "--threads", "1",
                            "--py-workers", "1", "--batches", "2", "--warmup", "1", "--repeats", "2", "--json", report,
                            "--quiet", "--packed", packed)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["dali_threads"] == 1 and data["dali_py_workers"] == 1 and data["baseline_workers"] == 1
    assert data["normalize"] == "channel" and data["device"] == "cpu" and data["batch_size"] == 4
    assert len(data["dali_runs"]) == len(data["torchvision_runs"]) == data["repeats"] == 2
    assert data["dali_img_s"] > 0 and data["torchvision_img_s"] > 0
    assert abs(data["ratio"] - data["dali_img_s"] / data["torchvision_img_s"]) < 1e-9
    assert "torchvision ImageFolder" in result.stdout
    # the packed twin, timed beside the files: one open per image read against one per shard and reader
    assert len(data["packed_runs"]) == 2 and data["packed_img_s"] > 0 and "packed twin" in result.stdout
    assert data["opens_per_1000"]["files"] == 1000
    assert 0 < data["opens_per_1000"]["packed"] <= 1000 * 2 * 2 / 12  # 2 shards × (1 reader + 1) in 12 images
    one_line_error(invoke_alexnet("benchmark", "data", "--data", prepared, "--packed", prepared, "--batch-size", "4",
                                  "--quiet"), "is not a packed dataset")


def test_the_torchvision_twin_does_the_pipelines_work_with_the_mean_image(prepared):
    import numpy as np
    import torch
    from PIL import Image

    from alexnet_cli.bench.data_speed import TorchvisionTwin
    from alexnet_cli.data.normalization import Normalization
    from alexnet_cli.data.sampling import Augmentation
    from alexnet_cli.data.stats import load_stats

    stats = load_stats(prepared)
    augmentation = Augmentation(crop=227, image_size=256, mirror=False, pca_std=0.0, eigval=stats.eigval,
                                eigvec=stats.eigvec)
    twin = TorchvisionTwin(augmentation, Normalization(stats.channel_mean, stats.channel_std, stats.mean_image),
                           227, None)
    path = sorted(prepared.glob("train/*/*.JPEG"))[0]
    with Image.open(path) as image:
        out = twin(image.convert("RGB"))
        pixels = torch.as_tensor(np.asarray(image.convert("RGB"))).permute(2, 0, 1).float()
    mean = torch.as_tensor(stats.mean_image).permute(2, 0, 1).float()
    # the crop offset is random: find it, then check the mean image was taken at the same place
    matches = [(x, y) for y in range(30) for x in range(30)
               if torch.allclose(out, pixels[:, y:y + 227, x:x + 227] - mean[:, y:y + 227, x:x + 227], atol=1e-3)]
    assert len(matches) == 1


def test_benchmark_model_reports_forward_and_train_step(tmp_path):
    report = tmp_path / "model.json"
    result = invoke_alexnet("benchmark", "model", "--arch", "keras-v2", "--batch-size", "2", "--warmup", "1",
                            "--batches", "2", "--json", report, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    [row] = json.loads(report.read_text())["results"]
    assert row["arch"] == "keras-v2" and row["variant"] == "fp32 eager"
    assert row["forward_ms"] > 0 and row["train_ms"] > 0 and row["train_img_s"] > 0


def test_benchmark_train_reports_lightning_beside_the_plain_loop_on_real_data(prepared, tmp_path):
    report = tmp_path / "train.json"
    result = invoke_alexnet("benchmark", "train", "--recipe", "cpu-demo", "--data", prepared,
                            "--set", "data.batch_size=4", *NARROW_FC,
                            "--steps", "2", "--warmup", "1", "--json", report, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(report.read_text())
    assert {"lightning_img_s", "plain_img_s", "overhead_pct", "data_wait_frac", "steps", "synthetic"} <= set(data)
    assert data["steps"] == 2 and data["synthetic"] is False and data["batch_size"] == 4
    assert data["repeats"] == 1 and data["plain_img_s_runs"] == [data["plain_img_s"]]
    assert data["overhead_pct_runs"] == [pytest.approx(data["overhead_pct"])]
    assert data["lightning_img_s"] > 0 and data["plain_img_s"] > 0 and 0 <= data["data_wait_frac"] < 1
    plain, lightning = data["plain_img_s"], data["lightning_img_s"]
    assert abs(data["overhead_pct"] - 100 * (plain - lightning) / plain) < 1e-6
    assert data["synthetic_img_s"] > 0 and abs(data["real_vs_synthetic"] - lightning / data["synthetic_img_s"]) < 1e-9
    assert "plain PyTorch loop" in result.stdout and "Lightning overhead" in result.stdout


def test_benchmark_train_on_synthetic_batches_needs_no_dataset(tmp_path):
    report = tmp_path / "train.json"
    result = invoke_alexnet("benchmark", "train", "--recipe", "cpu-demo", "--synthetic", "--set", "data.batch_size=2",
                            *NARROW_FC, "--set", "model.num_classes=10", "--steps", "1", "--warmup", "1",
                            "--json", report, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["synthetic"] is True and data["synthetic_img_s"] is None and data["lightning_img_s"] > 0


def test_benchmark_train_refuses_a_multi_process_recipe_in_one_line():
    from typer.testing import CliRunner

    from alexnet_cli.cli import app

    result = CliRunner().invoke(app, ["benchmark", "train", "--recipe", "two-gpu", "--synthetic"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "benchmark train times one" in result.stderr


def test_benchmark_comms_counts_every_exchange_of_the_layouts_exactly(tmp_path):
    batch, floats = 2, 4  # images per device's conv layers; fp32 bytes
    report = tmp_path / "comms.json"
    result = invoke_alexnet("benchmark", "comms", "--batch-size", batch, "--layout", "ddp", "--layout", "weird-trick",
                            "--json", report)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(report.read_text())
    assert figures["devices"] == {"ddp": 2, "weird-trick": 2}
    assert figures["totals"]["ddp"] == 60_965_224 * floats  # DDP all-reduces every gradient
    trick = figures["bytes_by_layout"]["weird-trick"]
    both = 2 * batch  # the FC layers see both devices' images
    assert trick == {
        "fc6 reads every rank's conv activations forward": batch * 9216 * floats,  # pool5, 256×6×6
        "fc6 reads every rank's conv activations backward": both * 9216 * floats,  # reduce-scattered back
        "fc7 reads all of fc6 forward": both * 2048 * floats,
        "fc7 reads all of fc6 backward": both * 4096 * floats,
        "fc8 reads all of fc7 forward": both * 2048 * floats,
        "fc8 reads all of fc7 backward": both * 4096 * floats,
        "class scores to every rank forward": both * 500 * floats,
        "conv gradients all-reduce": 2_334_080 * floats,  # conv1-5 with biases: the data-parallel part
    }


    assert figures["totals"]["weird-trick"] == sum(trick.values())
    assert "weird-trick total (2 devices)" in result.stdout


def test_benchmark_comms_refuses_an_unknown_layout():
    result = invoke_alexnet("benchmark", "comms", "--layout", "ring")
    assert result.returncode == 2 and "--layout 'ring': choose from ddp, two-gpu, hybrid, weird-trick" in result.stderr


def test_benchmark_soak_prints_memory_after_every_epoch(prepared, tmp_path):
    report = tmp_path / "soak.json"
    result = invoke_alexnet("benchmark", "soak", "--data", prepared, "--epochs", "2", "--settle", "1",
                            "--out", tmp_path / "run", "--json", report, "--set", "data.batch_size=4",
                            "--set", "trainer.limit_train_batches=2", "--set", "trainer.limit_val_batches=0",
                            *NARROW_FC)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(report.read_text())
    assert len(figures["rss_mb"]) == 2 and all(mb > 100 for mb in figures["rss_mb"])  # a torch process
    assert figures["rss_growth_mb"] == figures["rss_mb"][1] - figures["rss_mb"][0]
    assert "RSS after epoch 0 → epoch 1" in result.stdout


def test_host_time_blocked_in_the_pipeline_counts_only_the_timed_steps():
    from alexnet_cli.bench.train_loop import _Window

    class Loader:  # what the window reads of a DaliLoader: its running total of seconds inside run()
        host_wait_seconds = 0.0

    window = _Window(warmup=2, steps=3, device=torch.device("cpu"))
    window.loader = Loader()
    for step in range(5):
        window.step_started()
        window.loader.host_wait_seconds += 1.0 if step < 2 else 0.1  # the warm-up pays the pipeline's start
        window.step_ended()
    assert window.host_blocked_per_step == pytest.approx(0.1)
    assert window.busy_fraction is None  # CUDA events only on a GPU
