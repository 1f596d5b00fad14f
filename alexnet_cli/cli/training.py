"""Commands that train: train (and its dry run), demo, recipes."""

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
import yaml
from rich.table import Table

from alexnet_cli.atomic import check_writable
from alexnet_cli.cli.shell import console, notes_on_stderr, progress_for, user_errors, write_json
from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import available_recipes, load_recipe
from alexnet_cli.terminal import shown

if TYPE_CHECKING:
    from alexnet_cli.recipes import Recipe
    from alexnet_cli.training.plan import RunPlan
    from alexnet_cli.training.run import TrainResult


@user_errors
def train(
    recipe: str | None = typer.Option(None, "--recipe", help="A shipped recipe name (see 'alexnet recipes') or a "
                                      ".yaml path. With --resume: the run's own recipe unless given."),
    data: Path = typer.Option(..., "--data", help="A prepared dataset (from prepare-imagenet)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<recipe>-<time>)."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue from a checkpoint or a run directory's "
                                       "last.ckpt (any recipe's, if arch and classes agree)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run that --out already holds (its "
                                   "checkpoints and metrics); without it such an --out is refused."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or model summary."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the resolved recipe and the run's shape; train nothing."),
    benchmark_json: Path | None = typer.Option(None, "--benchmark-json", help="With --dry-run: estimate the "
                                               "time from 'alexnet benchmark model --json' figures."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the run's summary as JSON."),
) -> None:
    """Train a recipe with Lightning, fed by the DALI pipeline.
    """
    check_writable(out, "--out", folder=True)  # before training, and before importing torch and Lightning
    check_writable(json_out, "--json")
    from alexnet_cli.training.resume import recipe_of_run
    from alexnet_cli.training.run import run

    if recipe is None and resume is None:
        raise AlexnetError("give --recipe NAME (see 'alexnet recipes'), or --resume RUN to continue a run with "
                           "its own recipe")
    resolved = load_recipe(recipe, set_) if recipe is not None else recipe_of_run(resume, set_)
    if dry_run:
        _print_dry_run(resolved, data, benchmark_json, out, resume, overwrite)
        return
    result = run(resolved, data, out=out, quiet=quiet, resume=resume, overwrite=overwrite,
                 progress=notes_on_stderr())
    _print_result(result)
    write_json(json_out, asdict(result))


def _print_result(result: "TrainResult") -> None:
    if result.already_done is not None:
        console.print(f"{shown(result.run_dir)} is already done: its checkpoint (step {result.global_step}) reached "
                      f"{result.already_done}; nothing was trained or changed (raise it with --set to train on)",
                      soft_wrap=True)
        return
    table = Table(title=f"run {shown(result.run_dir)}", show_header=False)
    if result.best_top1 is not None:
        table.add_row("best val top-1 / top-5", f"{result.best_top1:.2%} / {result.best_top5:.2%} "
                      f"(epoch {result.best_epoch})")
    table.add_row("steps, time", f"{result.global_step}, {result.seconds:.0f} s")
    table.add_row("train throughput", f"{result.images_per_second:,.1f} img/s "
                  f"(data wait {result.data_wait_fraction:.1%})")
    if result.compile_seconds is not None:
        table.add_row("compile", f"{result.compile_seconds:.1f} s (the first step, compiling included)")
    table.add_row("metrics", shown(result.run_dir / "metrics.csv"))
    table.add_row("checkpoints", shown(result.last_checkpoint or "-") + ("  " + shown(result.best_checkpoint)
                                                                         if result.best_checkpoint else ""))
    console.print(table)


def _print_dry_run(recipe: "Recipe", data: Path, benchmark_json: Path | None, out: Path | None,
                   resume: Path | None, overwrite: bool) -> None:
    from alexnet_cli.models.execution import split_groups_note
    from alexnet_cli.training.setup import prepare_run

    # refuses what 'alexnet train' would refuse
    setup = prepare_run(recipe, data, out=out, resume=resume, overwrite=overwrite)
    rows = _plan_rows(setup.plan, benchmark_json)  # before printing: a bad --benchmark-json prints nothing
    console.print(shown(yaml.safe_dump(recipe.to_dict(), sort_keys=False)), highlight=False)
    table = Table(title=f"dry run: {shown(recipe.name)} on {shown(data)}", show_header=False)
    table.add_row("run directory", shown(setup.run_dir) + (f" (resuming {shown(setup.checkpoint)})"
                                                           if setup.checkpoint else "")
                  + (" (replacing the run it holds)" if setup.replaces_run else ""))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if recipe.model.split_groups and (note := split_groups_note(setup.model, recipe.model.arch)):
        console.print(note, soft_wrap=True)


def _plan_rows(plan: "RunPlan", benchmark_json: Path | None) -> list[tuple[str, str]]:
    """The run plan as the dry run's table rows."""
    from alexnet_cli.training.dryrun import estimated_hours

    devices = (f"{plan.devices} ({plan.data_parallel} data-parallel)" if plan.devices_known else
               f"trainer.devices={plan.recipe.trainer.devices}: every GPU of the machine that runs (none to count "
               "here); the figures below are for 1 per node")
    steps = f"{plan.epochs} / {plan.total_steps:,}" if plan.total_steps else str(plan.epochs)
    rows = [("devices", devices), ("layout", plan.description), ("global batch", f"{plan.global_batch:,}"),
            ("training images", f"{plan.train_images:,}"), ("steps per epoch", f"{plan.steps_per_epoch:,}"),
            ("epochs / total steps", steps)]
    speed, hours = estimated_hours(plan, benchmark_json) if benchmark_json is not None else (None, None)
    return [*rows, ("estimated time", f"{hours:,.1f} h at {speed:,.0f} img/s per device (model only: assumes the "
                    "pipeline keeps up)" if hours is not None else
                    "pass --benchmark-json from 'alexnet benchmark model --json' for one")]


@user_errors
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for everything the demo makes."),
    set_: list[str] = typer.Option([], "--set", help="Override a cpu-demo recipe key (section.key=value)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """The whole tool in a few CPU minutes: demo data → train cpu-demo → ten-crop eval → filters → report."""
    check_writable(out, "--out", folder=True)
    from alexnet_cli.workflows.demo import run_demo

    result = run_demo(out, overrides=set_, quiet=quiet, progress=progress_for(quiet),
                      notes=notes_on_stderr() if quiet else None)  # what it replaces is said even with --quiet
    table = Table(title="alexnet demo", show_header=False)
    skipped = len(result.prepare.skipped)
    table.add_row("dataset", f"{shown(result.data)} ({result.prepare.counts['train']} train, "
                  f"{result.prepare.counts['val']} val, {result.prepare.classes} classes"
                  + (f"; {skipped} unreadable file{'s' * (skipped != 1)} skipped, listed in "
                     f"{shown(result.data / 'report.json')}" if skipped else "") + ")")
    table.add_row("official-format source", shown(result.source))
    table.add_row("run", f"{shown(result.train.run_dir)} ({result.train.images_per_second:.1f} img/s)")
    table.add_row("ten-crop val top-1 / top-5",
                  f"{result.eval.top1:.2%} / {result.eval.top5:.2%} (chance {1 / result.prepare.classes:.1%})")
    table.add_row("eval results", shown(result.eval_json))
    table.add_row("filters (Figure 3)", shown(result.filters))
    table.add_row("what training changed in them", f"{shown(result.filters_change)} (conv1 moved "
                  f"{result.conv1_change:.1%} from its random start)")
    table.add_row("report and curves", shown(result.report / "report.md"))
    console.print(table)


@user_errors
def recipes_list(ctx: typer.Context) -> None:
    """List the shipped recipes with their descriptions."""
    if ctx.invoked_subcommand is not None:
        return
    from alexnet_cli.inspection.paper_claims import ABLATIONS

    table = Table(title="recipes")
    table.add_column("name")
    table.add_column("description")
    for name in available_recipes():
        table.add_row(shown(name), shown(load_recipe(name).description))
    console.print(table)
    ablations = Table(title="the paper's ablations: add to any paper-arch recipe, e.g. alexnet train --recipe "
                      "single-gpu --set model.lrn=false")
    # The --set values are for copying: never cut or folded, the other columns wrap around them.
    ablations.add_column("--set", no_wrap=True, min_width=max(len(" ".join(a.overrides)) for a in ABLATIONS))
    for column in ("section", "switches off", "the paper reports"):
        ablations.add_column(column)
    for ablation in ABLATIONS:
        ablations.add_row(" ".join(ablation.overrides), ablation.section, ablation.removes, ablation.paper_effect)
    console.print(ablations)


@user_errors
def recipes_show(
    name: str = typer.Argument(..., help="Recipe name or .yaml path."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
) -> None:
    """Print a recipe with every default filled in, and any --set applied."""
    console.print(shown(yaml.safe_dump(load_recipe(name, set_).to_dict(), sort_keys=False)), highlight=False)
