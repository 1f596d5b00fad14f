"""``alexnet report``: runs beside each other and beside the paper, from what a run directory holds."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import NARROW_FC, invoke_alexnet, scratch_dir
from PIL import Image

from alexnet_cli.inspection.report import RunSummary, markdown, paper_figures, summarize
from alexnet_cli.training.ablations import ABLATIONS

FAST = ["--recipe", "cpu-demo", "--quiet", "--set", "data.batch_size=8", "--set", "trainer.max_epochs=2", *NARROW_FC]


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    """A finished run with ten-crop results, an ablation run, and a run without validation."""
    with scratch_dir(tmp_path_factory, "runs") as root:
        made = {"paper": root / "paper", "no-lrn": root / "no-lrn", "no-val": root / "no-val"}
        extra = {"paper": [], "no-lrn": ["--set", "model.lrn=false"],
                 "no-val": ["--set", "trainer.limit_val_batches=0"]}
        for name, out in made.items():
            result = invoke_alexnet("train", "--data", prepared, "--out", out, *FAST, *extra[name])
            assert result.returncode == 0, result.stderr[-2000:]
        result = invoke_alexnet("eval", "--checkpoint", made["paper"] / "checkpoints" / "last.ckpt", "--data", prepared,
                                "--ten-crop", "--quiet", "--json", made["paper"] / "eval.json")
        assert result.returncode == 0, result.stderr[-2000:]
        yield made


def test_a_report_of_several_runs_writes_the_table_and_the_curves(runs, tmp_path):
    out = tmp_path / "report"
    result = invoke_alexnet("report", runs["paper"], runs["no-lrn"], runs["no-val"], "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    text = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"paper", "no-lrn", "no-val"}
    assert "model.lrn=false" in rows["no-lrn"] and "none" in rows["paper"]
    assert "| 2 |" in rows["paper"] and "finished" in rows["paper"]
    evaluated = json.loads((runs["paper"] / "eval.json").read_text())
    assert f"{100 * (1 - evaluated['top1']):.1f} / {100 * (1 - evaluated['top5']):.1f}" in rows["paper"]
    assert "no validation rows yet" in rows["no-val"]
    assert "not comparable (a CPU run)" in text
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 1000


def test_the_best_error_is_the_lowest_validation_error_of_the_run(runs):
    summary = summarize(runs["paper"])
    errors = [value for _, value in summary.curves["val top-1 error %"]]
    assert summary.epochs == 2 and summary.best_top1_error == min(errors) and summary.last_top1_error == errors[-1]
    assert len(summary.curves["learning rate"]) == 2 and summary.wall_seconds > 0


def test_a_run_still_in_progress_is_reported_as_such(runs, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(runs["paper"], running)
    facts = json.loads((running / "run.json").read_text())
    (running / "run.json").write_text(json.dumps({**facts, "finished": False}))
    lines = (running / "metrics.csv").read_text().splitlines()
    (running / "metrics.csv").write_text("\n".join(lines[:3]) + "\n")  # the first rows only
    assert "in progress" in markdown([summarize(running)])


def test_the_papers_figures_for_an_ablation_add_its_reported_cost():
    lrn = next(a for a in ABLATIONS if a.overrides == ("model.lrn=false",))
    summary = RunSummary(run_dir=Path("r"), recipe={}, ablations=[lrn], finished=True, epochs=90)
    assert "about 42.1 / 19.4 here" in paper_figures(summary)  # 40.7 + 1.4, 18.2 + 1.2


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    result = invoke_alexnet("report", tmp_path, "--out", tmp_path / "report")
    assert result.returncode == 2 and "not a run directory" in result.stderr and "Traceback" not in result.stderr
