"""``alexnet demo``: prepare → train → ten-crop eval → filters → report, on the synthetic demo data.

Above every layer it runs (data, training, inspection), so nothing of theirs reaches up to it."""

import json
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.data.prepare.demo import prepare_demo
from alexnet_cli.data.prepare.run import PrepareSummary
from alexnet_cli.errors import AlexnetError
from alexnet_cli.inspection.evaluate import EvalResult, evaluate
from alexnet_cli.inspection.filters import relative_change, save_filter_grid
from alexnet_cli.inspection.report import write_report
from alexnet_cli.models.checkpoints import initial_model, load_checkpoint
from alexnet_cli.progress import Progress, SilentProgress
from alexnet_cli.recipes import load_recipe
from alexnet_cli.terminal import shown
from alexnet_cli.training.run import TrainResult, run
from alexnet_cli.training.run_dir import read_run_facts


@dataclass
class DemoResult:
    source: Path
    data: Path
    prepare: PrepareSummary
    train: TrainResult
    eval: EvalResult
    eval_json: Path
    filters: Path
    report: Path
    filters_change: Path  # what training changed in conv1 (kernels minus their start)
    conv1_change: float  # ‖W − W₀‖ / ‖W₀‖ of conv1


def _holds_earlier_demo_run(run_dir: Path) -> bool:
    """True when RUN holds a run the demo made (its run.json names cpu-demo), which the demo replaces; any other
    run there is refused, since the demo trains with --overwrite."""
    if not any((run_dir / "checkpoints").glob("*.ckpt")):
        return False  # no run to lose
    facts = read_run_facts(run_dir)
    recipe = facts.get("recipe") if isinstance(facts, dict) else None
    if recipe != "cpu-demo":
        made_by = f"recipe {recipe!r}" if isinstance(recipe, str) else "no run.json naming its recipe"
        raise AlexnetError(f"{run_dir} holds a run the demo did not make ({made_by}); the demo replaces only its own "
                           "earlier run: choose another --out")
    return True


def run_demo(out: Path, *, overrides: list[str] | None = None, quiet: bool = False,
             progress: Progress | None = None, notes: Progress | None = None) -> DemoResult:
    """``notes`` hears what the demo replaces, even when ``progress`` is silent (default: ``progress``)."""
    progress = progress or SilentProgress()
    out = Path(out)
    data = out / "data"
    if _holds_earlier_demo_run(out / "run"):  # checked before anything is written
        (notes or progress).note(f"replacing the earlier demo run in {shown(out / 'run')}")
    progress.note(f"[bold]1/4[/] demo dataset in the official ILSVRC2012 format → {shown(data)}")
    prepared = prepare_demo(data, progress=progress)
    progress.note("[bold]2/4[/] training recipe cpu-demo")
    trained = run(load_recipe("cpu-demo", overrides), data, out=out / "run", quiet=quiet, overwrite=True,
                  progress=progress)
    checkpoint = trained.best_checkpoint or trained.last_checkpoint
    progress.note("[bold]3/4[/] ten-crop evaluation")
    result = evaluate(data, checkpoint=checkpoint, ten_crop=True, progress=progress)
    eval_json = trained.run_dir / "eval.json"  # in the run, where 'alexnet report' looks for it
    write_text_atomic(eval_json, json.dumps(result.to_json(), indent=1) + "\n")
    progress.note("[bold]4/4[/] conv1 filters (Figure 3) and the run's report")
    filters, filters_change = out / "filters.png", out / "filters-since-init.png"
    loaded = load_checkpoint(checkpoint)
    start = initial_model(loaded)
    save_filter_grid(loaded.model, filters)
    save_filter_grid(loaded.model, filters_change, start=start)  # a few minutes move conv1 only a few %
    write_report([trained.run_dir], out / "report")
    return DemoResult(data / "source", data, prepared, trained, result, eval_json, filters, out / "report",
                      filters_change, relative_change(loaded.model, start))
