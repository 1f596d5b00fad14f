"""Training on a packed dataset: the same steps as on its files, and a run resumes across the twins but not on
another dataset."""

import csv
import json
import shutil

import torch
from conftest import THREE_STEP_RUN, invoke_alexnet, one_line_error


def _losses(run) -> list[float]:
    return [float(row["train/loss"]) for row in csv.DictReader(open(run / "metrics.csv")) if row.get("train/loss")]


def test_a_packed_dataset_trains_the_same_losses_and_resumes_a_run_of_its_files(packed, trained_run, tmp_path):
    run, _ = trained_run
    out = tmp_path / "on-shards"
    result = invoke_alexnet("train", "--recipe", "cpu-demo", "--data", packed, "--out", out, "--quiet",
                            *THREE_STEP_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _losses(out) == _losses(run) and len(_losses(run)) == 3  # bit for bit: the same images, the same order
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["alexnet_cli"]
    assert saved["dataset_fingerprint"] == json.loads((packed / "dataset.json").read_text())["fingerprint"]
    resumed = invoke_alexnet("train", "--data", packed, "--resume", run, "--quiet", "--set", "trainer.max_epochs=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_resume_on_another_dataset_is_refused_by_its_fingerprint(prepared, trained_run, tmp_path):
    run, _ = trained_run
    other = tmp_path / "other"
    shutil.copytree(prepared, other)
    info = json.loads((other / "dataset.json").read_text())
    info["fingerprint"] = "sha256:" + "0" * 64  # as a dataset prepared from other images would say
    (other / "dataset.json").write_text(json.dumps(info))
    one_line_error(invoke_alexnet("train", "--data", other, "--resume", run, "--quiet", "--set",
                                  "trainer.max_epochs=2"), "was trained on another dataset than", "packed")
