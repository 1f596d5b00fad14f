"""``alexnet report``: runs beside each other and beside the paper, from what a run directory holds."""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import NARROW_FC, invoke_alexnet, scratch_dir
from PIL import Image

from alexnet_cli.inspection.paper_claims import ABLATIONS
from alexnet_cli.inspection.report import RunSummary, curves_figure, markdown, paper_figures, summarize

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


def _run_folder(path: Path, metrics: str = "epoch,step,train/loss,val/top1,val/top5\n0,1,6.9,,\n0,1,,0.25,0.75\n"):
    """A run folder as 'alexnet train' leaves it, written by hand: the report reads only these files."""
    path.mkdir(parents=True)
    (path / "recipe.yaml").write_text("name: cpu-demo\nmodel: {arch: paper}\ntrainer: {accelerator: cpu}\n")
    (path / "metrics.csv").write_text(metrics)
    return path


@pytest.mark.parametrize("name, damage, words", [
    ("metrics.csv", bytes(range(256)), " is not a metrics table that 'alexnet train' wrote"),
    ("metrics.csv", b"epoch,step,val/top1\n0,1,0.5\n", ": no 'val/top5' column"),
    ("run.json", b"[1, 2]", " holds a JSON list, not the object"),
    ("recipe.yaml", bytes(range(256)), " is not a recipe that 'alexnet train' wrote"),
], ids=["binary metrics", "no val/top5", "run.json a list", "binary recipe"])
def test_a_damaged_file_in_a_run_folder_is_named_in_one_line(name, damage, words, tmp_path):
    run = _run_folder(tmp_path / "run")
    (run / name).write_bytes(damage)
    result = invoke_alexnet("report", run, "--out", tmp_path / "report")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{run / name}{words}" in result.stderr, result.stderr


def _table_rows(report: Path) -> list[str]:
    return [line for line in (report / "report.md").read_text().splitlines() if line.startswith("| ")]


def test_runs_with_the_same_folder_name_are_named_by_their_shortest_unique_path(tmp_path):
    runs = [_run_folder(tmp_path / "x" / "r1"), _run_folder(tmp_path / "y" / "r1"), _run_folder(tmp_path / "z")]
    result = invoke_alexnet("report", *runs, "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert [line.split(" | ")[0] for line in _table_rows(tmp_path / "report")[1:]] == ["| x/r1", "| y/r1", "| z"]


def test_a_bar_in_a_run_name_stays_in_its_table_cell(tmp_path):
    result = invoke_alexnet("report", _run_folder(tmp_path / "a | b"), "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    header, run = _table_rows(tmp_path / "report")
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in (header, run)]
    assert cells[0] == cells[1] and run.startswith("| a \\| b |")


def test_the_legend_of_many_runs_is_beside_the_plots_not_over_them():
    import matplotlib.pyplot as plt

    runs = [RunSummary(run_dir=Path(f"run-{i:02d}"), recipe={}, ablations=[], finished=True, epochs=3,
                       curves={"training loss": [(1, 6.9 - i / 10), (2, 6.0 - i / 10)]}) for i in range(50)]
    figure = curves_figure(runs)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [run.name for run in runs]
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(axis.get_window_extent(renderer)) for axis in figure.axes)
    plt.close(figure)
