"""``alexnet train --dry-run``'s estimate: how long a run plan takes at a benchmark's speed."""

import json
from pathlib import Path

from alexnet_cli.errors import AlexnetError
from alexnet_cli.training.plan import RunPlan


def estimated_hours(plan: RunPlan, benchmark_json: Path) -> tuple[float, float | None]:
    """(train img/s per device from an ``alexnet benchmark model --json`` file, the hours of ``plan``'s steps at
    that speed; None where the plan has no step limit)."""
    speed = _benchmark_speed(benchmark_json, plan.recipe.model.arch)
    if not (plan.total_steps and speed):
        return speed, None
    return speed, plan.total_steps * plan.global_batch / (speed * plan.data_parallel) / 3600


def _benchmark_speed(path: Path, arch: str) -> float:
    """train img/s of ``arch`` per device from an ``alexnet benchmark model --json`` file."""
    try:
        rows = json.loads(Path(path).read_text())["results"]
    except (OSError, ValueError, KeyError):
        raise AlexnetError(f"--benchmark-json {path} is not the output of 'alexnet benchmark model --json'") from None
    matching = [r["train_img_s"] for r in rows if r.get("arch") == arch]
    if not matching:
        raise AlexnetError(f"--benchmark-json {path} has no figures for arch {arch!r}")
    return max(matching)
