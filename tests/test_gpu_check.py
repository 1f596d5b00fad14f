"""scripts/gpu-check.sh --cpu-smoke: every step of the GPU check that needs no CUDA, so that the check never
runs for the first time on a lent GPU, where a start costs minutes of a 15-minute budget."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_every_step_on_the_cpu_and_reports_each_figure(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--cpu-smoke", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SECONDS": "600"})
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((out / "gpu-check.json").read_text())
    assert [(s["step"], s["status"]) for s in report["steps"]] == [
        (name, "ok") for name in ("environment", "train-loop", "profile", "model", "lrn", "train-loop-before",
                                  "dali", "train-eval", "train-loop-switches", "compare")]
    lrn = {(r["layer"], r["layout"], r["impl"]) for r in report["lrn"]["rows"]}
    assert lrn == {(layer, layout, impl) for layer in ("norm1", "norm2") for layout in ("nchw", "nhwc")
                   for impl in ("reference", "closed-form", "closed-form compiled", "triton")}
    assert all(r["bf16_max_rel_error"] <= 2.0**-8 for r in report["lrn"]["rows"])
    model = report["model"]["rows"]
    assert model[0]["variant"] == report["model"]["baseline"] == "bf16-mixed reference LRN eager"
    assert all("error" not in r and r["train_img_s"] > 0 for r in model), model
    assert [r["compile_seconds"] is not None for r in model] == [False, True, True, False, False]
    loop = report["train-loop"]
    assert loop["host_blocked_ms_per_step"] > 0 and loop["gpu_busy_frac"] is None  # no CUDA events on a CPU
    window_seconds = loop["steps"] * loop["batch_size"] / loop["lightning_img_s"]
    assert loop["host_blocked_ms_per_step"] * loop["steps"] / 1e3 <= window_seconds  # inside the timed steps only
    categories = report["profile"]["ms_per_step_by_category"]
    assert categories["conv forward"] > 0 and categories["conv backward"] > 0 and categories["LRN"] > 0
    assert report["dali"]["rows"][0]["img_s"] > 0
    assert report["train-eval"]["steps"] == 2 and report["train-eval"]["eval_images"] > 0
    assert "lrn both layers µs (closed-form, nhwc)" in report["figures"]
    assert report["train-loop-before"]["switches"] == ["model.lrn_impl=reference"]
    assert report["train-loop-switches"]["switches"][0] == "model.compile=true"
    markdown = (out / "gpu-check.md").read_text()
    assert "| paper | bf16-mixed reference LRN eager |" in markdown and "## Profile" in markdown
