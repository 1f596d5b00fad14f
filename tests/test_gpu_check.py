"""scripts/gpu-check.sh: its plan, its deadlines and every step on the CPU (--cpu-smoke), so that the check never
runs for the first time on a lent GPU, where a start costs minutes of a 15-minute budget."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import one_line_error

ROOT = Path(__file__).resolve().parent.parent
CALL_1 = ["environment", "lrn", "train-loop", "train-loop-before", "dali", "profile", "model"]
CALL_2 = ["gpu-tests", "lrn-compiled", "model-compiled", "train-loop-switches", "train-eval", "compare"]


def gpu_check(*args, seconds: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    if seconds is not None:
        env["GPU_CHECK_SECONDS"] = seconds
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_the_gpu_check_runs_every_step_of_both_calls_on_the_cpu_and_reports_each_figure(tmp_path, prepared):
    out = tmp_path / "check"
    done = gpu_check("--cpu-smoke", out, prepared)
    assert done.returncode == 0, done.stderr[-4000:]
    plan = done.stderr.split("== ")[0]
    assert "call 1 (280 s)" in plan and "call 2 (280 s)" in plan and f"{out} {prepared} --call 2" in plan
    report = json.loads((out / "gpu-check.json").read_text())
    assert [(s["step"], s["status"]) for s in report["steps"]] == [(name, "ok") for name in CALL_1 + CALL_2]
    assert report["data"] == f"real photos: {prepared}"
    work = Path(tempfile.gettempdir()) / f"alexnet-gpu-check-smoke-{os.getuid()}" / "entries-smoke"
    assert (work / ".complete").read_text() == str(prepared.resolve())  # trained on them, not an earlier set
    lrn = {(r["layer"], r["layout"], r["impl"]): r for r in report["lrn"]["rows"] + report["lrn-compiled"]["rows"]}
    cases = [("nchw", "reference"), ("nchw", "closed-form"), ("nchw", "triton"), ("nhwc", "closed-form"),
             ("nchw", "closed-form compiled"), ("nhwc", "closed-form compiled")]
    assert set(lrn) == {(layer, layout, impl) for layer in ("norm1", "norm2") for layout, impl in cases}
    assert all(r["bf16_max_rel_error"] <= 2.0**-8 and r["bytes"] > 0 for r in lrn.values())
    # GB/s from the bytes each implementation moves, counted: Triton's the fewest of the eager ones
    norm1 = {impl: r["bytes"] for (layer, layout, impl), r in lrn.items() if layer == "norm1" and layout == "nchw"}
    assert norm1["reference"] > norm1["closed-form"] > norm1["triton"] > 0
    assert all(r["bytes_counted"] == "lower bound" and r["graphs"] == 1 and r["graph_breaks"] == 0
               for r in report["lrn-compiled"]["rows"])
    model = report["model"]["rows"]
    assert model[0]["variant"] == report["model"]["baseline"] == "bf16-mixed reference LRN eager"
    assert [r["variant"] for r in model] == ["bf16-mixed reference LRN eager", "bf16-mixed eager", "bf16-mixed eager"]
    assert all("error" not in r and r["train_img_s"] > 0 for r in model), model
    (compiled,) = report["model-compiled"]["rows"]
    assert compiled["compile_seconds"] > 0 and compiled["graphs"] >= 1 and compiled["graph_breaks"] == 0
    loop = report["train-loop"]
    assert loop["host_blocked_ms_per_step"] > 0 and loop["gpu_busy_frac"] is None  # no CUDA events on a CPU
    window_seconds = loop["steps"] * loop["batch_size"] / loop["lightning_img_s"]
    assert loop["host_blocked_ms_per_step"] * loop["steps"] / 1e3 <= window_seconds  # inside the timed steps only
    categories = report["profile"]["ms_per_step_by_category"]
    assert categories["conv forward"] > 0 and categories["conv backward"] > 0 and categories["LRN"] > 0
    assert report["dali"]["rows"][0]["img_s"] > 0 and "upper bound" in report["dali"]["bound"]
    assert report["train-eval"]["steps"] == 2 and report["train-eval"]["eval_images"] > 0
    assert "lrn both layers µs (triton, nchw)" in report["figures"]
    assert report["train-loop-before"]["switches"] == ["model.lrn_impl=reference"]
    assert report["train-loop-switches"]["switches"][0] == "model.compile=true"
    markdown = (out / "gpu-check.md").read_text()
    assert "| paper | bf16-mixed reference LRN eager |" in markdown and "## Profile" in markdown
    assert "lower bound" in markdown and "upper bound" in markdown and "1 graph(s), 0 break(s)" in markdown


def test_a_step_past_its_deadline_is_stopped_and_the_report_keeps_what_finished(tmp_path, prepared):
    out = tmp_path / "check"
    done = gpu_check("--cpu-smoke", out, prepared, "--steps", "environment,lrn,dali", "--deadlines", "lrn=1",
                     seconds="120")
    assert done.returncode == 1, done.stderr[-3000:]
    report = json.loads((out / "gpu-check.json").read_text())
    statuses = {s["step"]: s["status"] for s in report["steps"]}
    assert statuses["environment"] == "ok" and statuses["dali"] == "ok"  # the step after it ran
    assert statuses["lrn"].startswith("stopped at its 1 s deadline")
    kept = len(report.get("lrn", {}).get("rows", []))
    assert kept < 8 and (kept == 0 or f"(kept {kept} finished rows)" in statuses["lrn"])
    assert "stopped at its 1 s deadline" in (out / "gpu-check.md").read_text()
    assert "lrn" in done.stderr.splitlines()[-1]  # the summary names it
    # The call's own budget: once spent, the steps left are said not to have run.
    done = gpu_check("--cpu-smoke", out, prepared, "--steps", "environment,dali,profile", seconds="1")
    statuses = {s["step"]: s["status"] for s in json.loads((out / "gpu-check.json").read_text())["steps"]}
    assert statuses["profile"] == "not run: this call's 1 s were spent"


def test_bad_arguments_are_refused_in_one_line_before_anything_runs(tmp_path, prepared):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    one_line_error(gpu_check(a_file, timeout=30), f"OUT {a_file} is a file")
    assert a_file.read_text() == "not a folder"
    one_line_error(gpu_check(tmp_path / "out", seconds="abc", timeout=30), "GPU_CHECK_SECONDS / --seconds 'abc'")
    one_line_error(gpu_check(tmp_path / "out", "--steps", "lrn,bogus", timeout=30), "--steps: unknown bogus")
    one_line_error(gpu_check(tmp_path / "out", tmp_path, timeout=30), "is not a prepared dataset")
    one_line_error(gpu_check(tmp_path / "out", "--deadlines", "lrn=0", timeout=30), "--deadlines 'lrn=0'")
    one_line_error(gpu_check(timeout=30), "usage: scripts/gpu-check.sh")
    assert not (tmp_path / "out").exists()
