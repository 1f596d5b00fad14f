"""The benchmark commands run and report their fields (speed itself is never asserted)."""

import json

from conftest import run_alexnet


def test_benchmark_data_reports_both_loaders(prepared, tmp_path):
    report = tmp_path / "data.json"
    result = run_alexnet("benchmark", "data", "--data", prepared, "--batch-size", "4", "--threads", "1",
                         "--batches", "2", "--warmup", "1", "--json", report, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(report.read_text())
    assert {"dali_img_s", "torchvision_img_s", "ratio", "batch_size", "threads", "device"} <= set(data)
    assert data["dali_img_s"] > 0 and data["torchvision_img_s"] > 0
    assert abs(data["ratio"] - data["dali_img_s"] / data["torchvision_img_s"]) < 1e-9
    assert "torchvision ImageFolder" in result.stdout


def test_benchmark_model_reports_forward_and_train_step(tmp_path):
    report = tmp_path / "model.json"
    result = run_alexnet("benchmark", "model", "--arch", "keras-v2", "--batch-size", "2", "--warmup", "1",
                         "--batches", "2", "--json", report, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    [row] = json.loads(report.read_text())["results"]
    assert row["arch"] == "keras-v2" and row["variant"] == "fp32 eager"
    assert row["forward_ms"] > 0 and row["train_ms"] > 0 and row["train_img_s"] > 0
