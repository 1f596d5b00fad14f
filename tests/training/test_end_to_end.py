"""``alexnet demo``, the README's first command, end to end through the real command line (cut short)."""

import json
import re

from conftest import NARROW_FC, run_alexnet


def test_demo_prepares_trains_evaluates_draws_and_reports_quietly_and_lightly(tmp_path):
    out = tmp_path / "demo"
    result = run_alexnet("demo", "--out", out, "--set", "trainer.max_epochs=1",
                         "--set", "trainer.limit_train_batches=2",
                         "--set", "trainer.limit_val_batches=1", *NARROW_FC)
    assert result.returncode == 0, result.stderr[-3000:]
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
    assert re.search(r"paper: [\d,]+ parameters, 227×227 crops, 8 classes", said)  # instead of Lightning's table
    assert "litlogger" not in said and "FLOPs" not in said
