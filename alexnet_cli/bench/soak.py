"""``alexnet benchmark soak``: train for many epochs and watch memory; it must stay flat.

Reads the ``sys/rss_mb`` (and on GPUs ``sys/gpu_used_mb``) that every training run logs at each
epoch's end, and reports the growth after the first ``settle`` epochs (allocator pools,
DALI's buffers and caches fill during those).
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import load_recipe
from alexnet_cli.training.run import run


@dataclass
class SoakResult:
    run_dir: str
    epochs: int
    settle: int
    rss_mb: list[float]
    gpu_used_mb: list[float]
    rss_growth_mb: float  # last epoch minus the end of the settle epochs
    rss_growth_mb_per_epoch: float
    images_per_second: float


def soak(recipe: str, data: Path, *, epochs: int, settle: int = 2, out: Path | None = None,
         overrides: list[str] | None = None, quiet: bool = True) -> SoakResult:
    if epochs <= settle:
        raise AlexnetError(f"--epochs {epochs} must exceed --settle {settle}: the growth is measured after those")
    trained = run(load_recipe(recipe, [*(overrides or []), f"trainer.max_epochs={epochs}"]), data, out=out,
                  quiet=quiet)
    with open(trained.run_dir / "metrics.csv") as metrics:
        rows = list(csv.DictReader(metrics))
    rss = [float(row["sys/rss_mb"]) for row in rows if row.get("sys/rss_mb")]
    gpu = [float(row["sys/gpu_used_mb"]) for row in rows if row.get("sys/gpu_used_mb")]
    growth = rss[-1] - rss[settle - 1] if len(rss) >= settle else 0.0
    return SoakResult(str(trained.run_dir), epochs, settle, rss, gpu, growth, growth / max(1, len(rss) - settle),
                      trained.images_per_second)
