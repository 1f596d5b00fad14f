"""``alexnet demo``, the README's first command, end to end through the real command line (cut short)."""

import json
import re

from conftest import invoke_alexnet


def test_demo_replaces_only_its_own_earlier_run_and_says_so_even_with_quiet(tmp_path):
    out = tmp_path / "demo"
    checkpoint = out / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a run of its own")
    (out / "run" / "run.json").write_text(json.dumps({"recipe": "single-gpu"}))
    (out / "data").write_text("a file where the demo's dataset goes: the demo stops there, before training")
    result = invoke_alexnet("demo", "--out", out, "--quiet")
    message = result.stderr.strip()
    assert result.returncode == 2 and message.count("\n") == 0, message
    assert f"{out / 'run'} holds a run the demo did not make (recipe 'single-gpu')" in message

    (out / "run" / "run.json").write_text(json.dumps({"recipe": "cpu-demo"}))  # the demo's own earlier run
    result = invoke_alexnet("demo", "--out", out, "--quiet")
    assert result.returncode == 2 and "is a file" in result.stderr
    said = "".join(result.stderr.split())  # as one line, whatever the console's width
    assert f"replacingtheearlierdemorunin{out / 'run'}" in said
    assert checkpoint.read_bytes() == b"a run of its own"


def test_demo_prepares_trains_evaluates_draws_and_reports_quietly_and_lightly(demo_made):
    out, result = demo_made
    counts = json.loads((out / "data" / "dataset.json").read_text())["counts"]
    assert counts == {"train": 319, "val": 96}  # one of the demo's hazards is unreadable
    assert sorted(p.name for p in (out / "run" / "checkpoints").iterdir()) == ["last.ckpt"]  # one save, at the end
    evaluation = json.loads((out / "run" / "eval.json").read_text())
    assert evaluation["images"] == 96 and evaluation["ten_crop"] is True and 0 <= evaluation["top1"] <= 1
    for picture in ("filters.png", "filters-since-init.png", "report/curves.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    assert "cpu-demo" in (out / "report" / "report.md").read_text()
    said = result.stdout + result.stderr
    assert "ten-crop val top-1 / top-5" in result.stdout
    summary = " ".join(result.stdout.split())  # the table's lines fold at the console's width
    assert "319 train, 96 val, 8 classes; 1 unreadable file skipped, listed in" in summary.replace("│ ", "")
    assert re.search(r"paper: [\d,]+ parameters, 227×227 crops, 8 classes", said)  # instead of Lightning's table
    assert "litlogger" not in said and "FLOPs" not in said
    assert not re.search(r"GPU available|TPU available|weights_only", said), said  # Lightning's chatter
