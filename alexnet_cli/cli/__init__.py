"""The ``alexnet`` command line: one small function per command, each calling one library function.

Errors below this module are ``AlexnetError``s; they are caught here, once, and
printed as one line (exit code 2). ``--debug`` shows the traceback instead.
"""

import functools
import json
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from alexnet_cli import __version__
from alexnet_cli.errors import AlexnetError, TrainingStopped
from alexnet_cli.terminal import shown

app = typer.Typer(
    name="alexnet", no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    help="Train AlexNet the way the 2012 paper did, on today's hardware: prepare ILSVRC2012, train a recipe "
         "(DALI + Lightning), evaluate with the paper's ten crops, and look at the filters.",
)
recipes_app = typer.Typer(help="List the shipped recipes, or show one fully resolved.", no_args_is_help=False)
app.add_typer(recipes_app, name="recipes")
benchmark_app = typer.Typer(help="Measure speed: the data pipeline, the model, the training loop and the "
                            "communication, each beside a baseline.",
                            no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")
console = Console()
errors = Console(stderr=True)
_options = {"debug": False}  # set by the top-level callback, read by user_errors


def _version(value: bool) -> None:
    if value:
        console.print(f"alexnet-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _options["debug"] = debug


def user_errors(command: Callable) -> Callable:
    """Print ``AlexnetError`` (and anything unexpected) as one line unless --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = _options["debug"]
        try:
            return command(*args, **kwargs)
        except TrainingStopped as exc:
            if debug:
                raise
            from alexnet_cli.training.preemption import trainer_is_rank_zero

            if trainer_is_rank_zero():  # every DDP rank stops alike; one line is enough
                errors.print(f"[bold yellow]stopped:[/] {shown(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except AlexnetError as exc:
            if debug:
                raise
            errors.print(f"[bold red]error:[/] {shown(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if debug:
                raise
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            if _is_lost_peer(message):
                message = f"another training process stopped, so this one cannot go on ({message})"
            errors.print(f"[bold red]error:[/] {shown(type(exc).__name__)}: {shown(message)} "
                         "(rerun with --debug for details)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _require(*bounds: tuple[str, int | None, int | None, int | None]) -> None:
    """Each (option, value, lowest, highest): a value outside its range is refused in one line."""
    for option, value, low, high in bounds:
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise AlexnetError(f"{option} {value}: must be {allowed}")


def _check_device(device: str) -> None:
    if device not in ("cpu", "gpu"):
        raise AlexnetError(f"--device {device!r}: use cpu or gpu")


def _is_lost_peer(message: str) -> bool:
    """gloo and NCCL errors that mean a peer process died (a killed rank)."""
    return any(sign in message for sign in ("Connection closed by peer", "Connection reset by peer",
                                            "NCCL communicator was aborted", "Broken pipe"))


def _progress(quiet: bool):
    from alexnet_cli.progress import RichProgress, SilentProgress

    return SilentProgress() if quiet else RichProgress(console)


def _write_json(path: Optional[Path], payload: dict) -> None:
    if path is not None:
        from alexnet_cli.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")
        console.print(f"wrote {shown(path)}")


@app.command("prepare-imagenet")
@user_errors
def prepare_imagenet_command(
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    source: Optional[Path] = typer.Option(None, "--source", help="Folder with the ILSVRC2012 tars (or train/ val/)."),
    demo: bool = typer.Option(False, "--demo", help="Make the synthetic demo dataset instead (no download)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: all cores)."),
    size: int = typer.Option(256, "--size", help="Shorter side of the stored images (the paper: 256)."),
    mode: str = typer.Option("paper", "--mode", help="paper: 256×256 centre crop (§2); shorter: keep aspect."),
    classes: Optional[int] = typer.Option(None, "--classes", help="Keep a deterministic subset of K classes."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Keep at most M train images per class."),
    verify_md5: bool = typer.Option(False, "--verify-md5", help="Check the official files' MD5 first."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable image instead of skipping."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the summary as JSON."),
) -> None:
    """Turn the official ILSVRC2012 files into the dataset [bold]train[/] reads, with the paper's statistics.

    Resumable: rerun the same command after a crash and it continues where it stopped.

    Example: [cyan]alexnet prepare-imagenet --source ~/Downloads/ilsvrc2012 --out /data/imagenet[/]
    Demo:    [cyan]alexnet prepare-imagenet --demo --out demo-data[/]
    """
    _require(("--workers", workers, 1, None), ("--classes", classes, 2, None), ("--per-class", per_class, 1, None))
    from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet, summary_dict
    from alexnet_cli.training.end_to_end import prepare_demo

    progress = _progress(quiet)
    if demo:
        if source is not None:
            raise AlexnetError("--demo makes its own source; drop --source")
        summary = prepare_demo(out, workers=workers, progress=progress)
    else:
        if source is None:
            raise AlexnetError("--source is required (or --demo for the synthetic dataset)")
        summary = prepare_imagenet(PrepareOptions(source, out, workers, size, mode, classes, per_class,
                                                  verify_md5, strict), progress)
    table = Table(title=f"prepared {shown(summary.out)}" + (" (already complete)" if summary.already_done else ""))
    for column in ("split", "images", "classes"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, count in summary.counts.items():
        table.add_row(split, f"{count:,}", str(summary.classes))
    console.print(table)
    if summary.source_kind == "imagefolder":
        console.print("an ImageFolder source has no devkit to check it against: the classes and images above are "
                      "what its folders held")
    if summary.fixes:
        console.print("converted: " + ", ".join(f"{k} {v}" for k, v in summary.fixes.items()))
    if summary.skipped:
        console.print(f"[yellow]skipped {len(summary.skipped)} unreadable file(s)[/], "
                      f"listed in {shown(summary.out)}/report.json")
    if not summary.already_done and summary.seconds:
        console.print(f"{summary.images_per_second:,.0f} img/s with {summary.workers} worker(s), "
                      f"{summary.seconds:.1f} s")
    _write_json(json_out, summary_dict(summary))


@app.command()
@user_errors
def train(
    recipe: str = typer.Option(..., "--recipe", help="A shipped recipe name (see 'alexnet recipes') or a .yaml path."),
    data: Path = typer.Option(..., "--data", help="A prepared dataset (from prepare-imagenet)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<recipe>-<time>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a checkpoint or a run directory's "
                                          "last.ckpt (any recipe's, if arch and classes agree)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run that --out already holds (its "
                                   "checkpoints and metrics); without it such an --out is refused."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or model summary."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Print the resolved recipe and the run's shape; train nothing."),
    benchmark_json: Optional[Path] = typer.Option(None, "--benchmark-json", help="With --dry-run: estimate the "
                                                  "time from 'alexnet benchmark model --json' figures."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the run's summary as JSON."),
) -> None:
    """Train a recipe with Lightning, fed by the DALI pipeline.

    Example: [cyan]alexnet train --recipe cpu-demo --data demo-data --set trainer.max_epochs=2[/]
    Resume:  [cyan]alexnet train --recipe cpu-demo --data demo-data --resume runs/cpu-demo-20261125-101500[/]
    """
    from alexnet_cli.training.run import run

    if dry_run:
        _print_dry_run(recipe, data, set_, benchmark_json, out, resume, overwrite)
        return
    result = run(recipe, data, out=out, overrides=set_, quiet=quiet, resume=resume, overwrite=overwrite)
    table = Table(title=f"run {shown(result.run_dir)}", show_header=False)
    if result.best_top1 is not None:
        table.add_row("best val top-1 / top-5", f"{result.best_top1:.2%} / {result.best_top5:.2%} "
                      f"(epoch {result.best_epoch})")
    table.add_row("steps, time", f"{result.global_step}, {result.seconds:.0f} s")
    table.add_row("train throughput", f"{result.images_per_second:,.1f} img/s "
                  f"(data wait {result.data_wait_fraction:.1%})")
    table.add_row("metrics", shown(result.run_dir / "metrics.csv"))
    table.add_row("checkpoints", shown(result.last_checkpoint or "-") + ("  " + shown(result.best_checkpoint)
                                                                         if result.best_checkpoint else ""))
    console.print(table)
    from dataclasses import asdict

    _write_json(json_out, asdict(result))


def _print_dry_run(recipe_name: str, data: Path, overrides: list[str], benchmark_json: Optional[Path],
                   out: Optional[Path], resume: Optional[Path], overwrite: bool) -> None:
    import yaml

    from alexnet_cli.training.dryrun import plan_run
    from alexnet_cli.recipes import load_recipe
    from alexnet_cli.training.run import prepare_run

    recipe = load_recipe(recipe_name, overrides)
    setup = prepare_run(recipe, data, out=out, resume=resume, overwrite=overwrite)  # refuses what 'alexnet train' would refuse
    plan = plan_run(recipe, len(setup.datamodule.split("train")), benchmark_json=benchmark_json)
    console.print(shown(yaml.safe_dump(recipe.to_dict(), sort_keys=False)), highlight=False)
    table = Table(title=f"dry run: {shown(recipe.name)} on {shown(data)}", show_header=False)
    table.add_row("run directory", shown(setup.run_dir) + (f" (resuming {shown(setup.checkpoint)})"
                                                           if setup.checkpoint else "")
                  + (" (replacing the run it holds)" if setup.replaces_run else ""))
    table.add_row("devices", f"{plan.devices} ({plan.data_parallel} data-parallel)")
    table.add_row("layout", plan.layout)
    table.add_row("global batch", f"{plan.global_batch:,}")
    table.add_row("training images", f"{plan.train_images:,}")
    table.add_row("steps per epoch", f"{plan.steps_per_epoch:,}")
    steps = f"{plan.epochs} / {plan.total_steps:,}" if plan.total_steps else str(plan.epochs)
    table.add_row("epochs / total steps", steps)
    if plan.estimated_hours is not None:
        table.add_row("estimated time", f"{plan.estimated_hours:,.1f} h at {plan.images_per_second:,.0f} img/s per "
                      "device (model only: assumes the pipeline keeps up)")
    else:
        table.add_row("estimated time", "pass --benchmark-json from 'alexnet benchmark model --json' for one")
    console.print(table)


@app.command("eval")
@user_errors
def eval_command(
    data: Path = typer.Option(..., "--data", help="A prepared dataset."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint from 'alexnet train'."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A torchvision AlexNet state dict instead."),
    split: str = typer.Option("val", "--split", help="Which split to evaluate."),
    ten_crop: bool = typer.Option(True, "--ten-crop/--center-crop", help="The paper's 10 crops, or one centre crop."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per batch (×10 crops)."),
    device: str = typer.Option("cpu", "--device", help="cpu or gpu."),
    threads: int = typer.Option(2, "--threads", help="DALI threads."),
    devices: int = typer.Option(1, "--devices", help="Processes (one per GPU); each image is counted once."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write each image's label and top-5 "
                                               "classes as CSV (file,label,top1,top5)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Top-1 / top-5 accuracy with the paper's ten-crop test (§4.1): corners, centre and mirrors.

    Example: [cyan]alexnet eval --checkpoint runs/demo/checkpoints/best.ckpt --data demo-data --ten-crop[/]
    """
    _require(("--batch-size", batch_size, 1, None), ("--threads", threads, 1, None), ("--devices", devices, 1, None))
    from alexnet_cli.inspection.evaluate import PAPER_VAL_ERROR, evaluate

    _check_device(device)
    result = evaluate(data, checkpoint=checkpoint, weights=weights, split=split, ten_crop=ten_crop,
                      batch_size=batch_size, device=device, num_threads=threads, devices=devices,
                      with_predictions=predictions is not None, progress=_progress(quiet))
    table = Table(title=f"{result.arch} on {data} / {split}: {result.images:,} images, "
                  f"{'10 crops' if ten_crop else 'centre crop'}")
    for column in ("", "top-1 acc", "top-5 acc", "top-1 err", "top-5 err"):
        table.add_column(column, justify="right")
    table.add_row("this model", f"{result.top1:.2%}", f"{result.top5:.2%}", f"{result.top1_error:.2%}",
                  f"{result.top5_error:.2%}")
    if result.arch == "paper":
        table.add_row("paper, 1 CNN (ILSVRC-2012 val)", f"{1 - PAPER_VAL_ERROR['top1']:.1%}",
                      f"{1 - PAPER_VAL_ERROR['top5']:.1%}", f"{PAPER_VAL_ERROR['top1']:.1%}",
                      f"{PAPER_VAL_ERROR['top5']:.1%}")
    console.print(table)
    console.print(f"{result.images_per_second:,.1f} img/s")
    if result.skipped:
        errors.print(f"[yellow]skipped {len(result.skipped)} image(s) that could not be used[/] (not scored; "
                     f"accuracy is over the {result.images:,} read), e.g. {shown(result.skipped[0])}"
                     + (f"; all listed in {shown(json_out)}" if json_out else "; --json lists them all"),
                     highlight=False, soft_wrap=True)
    if predictions is not None:
        _write_predictions(predictions, result.predictions)
        result.predictions = None  # in the CSV, not also in the JSON
    _write_json(json_out, result.to_json())


def _write_predictions(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from alexnet_cli.atomic import write_text_atomic

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "label", "top1", "top5"])
    for row in rows:
        writer.writerow([row["file"], row["label"], row["top5"][0], " ".join(map(str, row["top5"]))])
    write_text_atomic(path, text.getvalue())


@app.command()
@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories of 'alexnet train' (finished or not)."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.md and curves.png."),
) -> None:
    """Runs beside each other and beside the paper's errors: report.md and curves.png.

    Example: [cyan]alexnet report runs/single-gpu runs/no-lrn --out report[/]
    """
    from alexnet_cli.inspection.report import paper_figures, write_report

    summaries = write_report(runs, out)
    table = Table(title=f"{len(summaries)} run(s): {out / 'report.md'}, {out / 'curves.png'}")
    for column in ("run", "epochs", "best top-1 / top-5 error %", "the paper"):
        table.add_column(column)
    for s in summaries:
        best = (f"{s.best_top1_error:.1f} / {s.best_top5_error:.1f}" if s.best_top1_error is not None
                else "no validation rows yet")
        table.add_row(shown(s.name), str(s.epochs), best, shown(paper_figures(s)))
    console.print(table)


@app.command("viz-filters")
@user_errors
def viz_filters(
    out: Path = typer.Option(Path("filters.png"), "--out", help="PNG to write."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint from 'alexnet train'."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A torchvision AlexNet state dict instead."),
    layer: str = typer.Option("conv1", "--layer", help="Which conv layer."),
    scale: int = typer.Option(4, "--scale", help="Pixels per kernel pixel."),
    since_init: bool = typer.Option(False, "--since-init", help="Draw what training changed (the kernels minus "
                                    "their initial values, rebuilt from the recipe's seed): a short run's "
                                    "kernels are still mostly their random start."),
) -> None:
    """Draw the learned kernels, like the paper's Figure 3 (one block per GPU tower).

    Example: [cyan]alexnet viz-filters --checkpoint runs/demo/checkpoints/best.ckpt --out filters.png[/]
    """
    _require(("--scale", scale, 1, 64))
    from alexnet_cli.models.checkpoints import initial_model, load_checkpoint, load_torchvision_weights
    from alexnet_cli.inspection.filters import relative_change, save_filter_grid

    if (checkpoint is None) == (weights is None):
        raise AlexnetError("give exactly one of --checkpoint and --weights")
    if since_init and checkpoint is None:
        raise AlexnetError("--since-init needs --checkpoint: torchvision's weights do not say how they started")
    loaded = load_checkpoint(checkpoint) if checkpoint else load_torchvision_weights(weights, [])
    start = initial_model(loaded) if checkpoint else None
    save_filter_grid(loaded.model, out, layer=layer, scale=scale, start=start if since_init else None)
    console.print(f"wrote {shown(out)}" + (f" ({layer} moved {relative_change(loaded.model, start, layer):.1%} "
                                          "from its initial values)" if start is not None else ""))


@app.command()
@user_errors
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (any format PIL reads)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint from 'alexnet train'."),
    top: int = typer.Option(5, "--top", help="How many classes to list."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the predictions as JSON."),
) -> None:
    """The most probable classes of each image, with names and probabilities.

    Example: [cyan]alexnet predict --checkpoint runs/demo/checkpoints/best.ckpt photo.jpg[/]
    """
    _require(("--top", top, 1, None))
    from dataclasses import asdict

    from alexnet_cli.inspection.predict import predict as predict_images

    predictions = predict_images(checkpoint, images, top=top)
    for prediction in predictions:
        table = Table(title=shown(prediction.image))
        for column in ("#", "wnid", "class", "probability"):
            table.add_column(column, justify="right" if column in ("#", "probability") else "left")
        for rank, item in enumerate(prediction.classes, start=1):
            table.add_row(str(rank), shown(item["wnid"]), shown(item["words"]), f"{item['probability']:.1%}")
        console.print(table)
    _write_json(json_out, {"predictions": [asdict(p) for p in predictions]})


@app.command()
@user_errors
def neighbors(
    query: list[Path] = typer.Option(..., "--query", help="Query image file(s); repeat for several."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint from 'alexnet train'."),
    data: Path = typer.Option(..., "--data", help="The prepared dataset whose training images are searched."),
    k: int = typer.Option(6, "--k", help="Neighbours per query."),
    out: Path = typer.Option(Path("neighbors.png"), "--out", help="PNG grid: a row per query, query first."),
    device: str = typer.Option("cpu", "--device", help="cpu or gpu: where the training set is embedded and "
                               "searched."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Figure 4: the training images nearest to each query by fc7 activations (Euclidean).

    The training set's codes are stored beside the checkpoint (float16, CHECKPOINT.train-fc7.f16; in
    ~/.cache/alexnet-cli/neighbors where its folder is read-only), so the next query is fast; an interrupted
    embedding continues where it stopped when run again. Images that cannot be read are never neighbours.

    Example: [cyan]alexnet neighbors --checkpoint best.ckpt --data demo/data --query photo.jpg --k 6[/]
    """
    _require(("--k", k, 1, None))
    from alexnet_cli.inspection.neighbors import find_neighbours

    _check_device(device)
    results = find_neighbours(checkpoint, data, query, k=k, out=out, device=device, progress=_progress(quiet))
    for result in results:
        table = Table(title=f"nearest to {result.query}")
        table.add_column("#", justify="right")
        table.add_column("training image")
        table.add_column("distance", justify="right")
        for rank, (path, distance) in enumerate(result.neighbours, start=1):
            table.add_row(str(rank), path, f"{distance:,.2f}")
        console.print(table)
    console.print(f"wrote {shown(out)}")


@app.command()
@user_errors
def summary(
    arch: str = typer.Option("paper", "--arch", help="An arch of the zoo."),
    num_classes: int = typer.Option(1000, "--num-classes", help="Width of the last layer."),
) -> None:
    """Layer by layer: output shape, parameters and neurons (the paper counts 60,965,224 parameters).

    Example: [cyan]alexnet summary --arch paper[/]
    """
    _require(("--num-classes", num_classes, 1, None))
    from alexnet_cli.models import ARCHS
    from alexnet_cli.inspection.summary import summarize

    if arch not in ARCHS:
        raise AlexnetError(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    rows, total = summarize(arch, num_classes)
    table = Table(title=f"{arch}: {ARCHS[arch].description}")
    for column in ("layer", "type", "output", "parameters", "neurons"):
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for row in rows:
        table.add_row(row.name, row.kind, "×".join(map(str, row.output_shape)),
                      f"{row.parameters:,}" if row.parameters else "", f"{row.neurons:,}" if row.neurons else "")
    console.print(table)
    console.print(f"total parameters: {total:,}")
    console.print(f"total neurons: {sum(r.neurons for r in rows):,}")


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for everything the demo makes."),
    set_: list[str] = typer.Option([], "--set", help="Override a cpu-demo recipe key (section.key=value)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """The whole tool in a few CPU minutes: demo data → train cpu-demo → ten-crop eval → filters → report.

    Example: [cyan]alexnet demo --out demo[/]
    """
    from alexnet_cli.training.end_to_end import run_demo

    result = run_demo(out, overrides=set_, quiet=quiet, progress=_progress(quiet))
    table = Table(title="alexnet demo", show_header=False)
    table.add_row("dataset", f"{shown(result.data)} ({result.prepare.counts['train']} train, "
                  f"{result.prepare.counts['val']} val, {result.prepare.classes} classes)")
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


@recipes_app.callback(invoke_without_command=True)
def recipes_list(ctx: typer.Context) -> None:
    """List the shipped recipes with their descriptions."""
    if ctx.invoked_subcommand is not None:
        return
    from alexnet_cli.recipes import available_recipes, load_recipe

    from alexnet_cli.training.ablations import ABLATIONS

    table = Table(title="recipes")
    table.add_column("name")
    table.add_column("description")
    for name in available_recipes():
        table.add_row(shown(name), shown(load_recipe(name).description))
    console.print(table)
    ablations = Table(title="the paper's ablations: add to any paper-arch recipe, e.g. alexnet train --recipe "
                      "single-gpu --set model.lrn=false")
    for column in ("--set", "section", "switches off", "the paper reports"):
        ablations.add_column(column)
    for ablation in ABLATIONS:
        ablations.add_row(" ".join(ablation.overrides), ablation.section, ablation.removes, ablation.paper_effect)
    console.print(ablations)


@recipes_app.command("show")
@user_errors
def recipes_show(
    name: str = typer.Argument(..., help="Recipe name or .yaml path."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
) -> None:
    """Print a recipe with every default filled in, and any --set applied.

    Example: [cyan]alexnet recipes show single-gpu --set model.lrn=false[/]
    """
    import yaml

    from alexnet_cli.recipes import load_recipe

    console.print(shown(yaml.safe_dump(load_recipe(name, set_).to_dict(), sort_keys=False)), highlight=False)


@benchmark_app.command("data")
@user_errors
def benchmark_data_command(
    data: Path = typer.Option(..., "--data", help="A prepared dataset (real photos give real figures)."),
    recipe: str = typer.Option("cpu-demo", "--recipe", help="Whose data settings to time: device, batch, threads, "
                               "readers, resize, normalisation."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per batch (default: the recipe's)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="DALI threads (default: the recipe's)."),
    py_workers: Optional[int] = typer.Option(None, "--py-workers", help="DALI's file-reading processes (default: "
                                             "the recipe's)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader workers of the baseline (default: "
                                          "the DALI threads)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or gpu for the DALI side (default: the "
                                         "recipe's)."),
    batches: int = typer.Option(20, "--batches", help="Timed batches, after the warm-up."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed batches first (worker start-up, caches)."),
    repeats: int = typer.Option(1, "--repeats", help="Run each side this many times, alternating; report medians."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """img/s of a recipe's DALI training pipeline vs torchvision ImageFolder + DataLoader doing the same work.

    Example: [cyan]alexnet benchmark data --data /data/imagenet --recipe single-gpu --repeats 3[/]
    """
    _require(("--batch-size", batch_size, 1, None), ("--threads", threads, 1, None), ("--py-workers", py_workers, 0, None),
             ("--workers", workers, 0, None), ("--batches", batches, 1, None), ("--warmup", warmup, 0, None),
             ("--repeats", repeats, 1, None))
    from alexnet_cli.bench.speed import as_dict, benchmark_data
    from alexnet_cli.recipes import load_recipe

    overrides = list(set_)
    for key, value in (("batch_size", batch_size), ("num_threads", threads), ("py_workers", py_workers),
                       ("device", device)):
        if value is not None:
            overrides.append(f"data.{key}={value}")
    loaded = load_recipe(recipe, overrides)
    _check_device(loaded.data.device)
    result = benchmark_data(data, loaded, baseline_workers=workers, batches=batches, warmup=warmup, repeats=repeats,
                            progress=_progress(quiet))
    table = Table(title=f"training input pipeline ({loaded.name}), batch {result.batch_size}, {result.device}, "
                  f"normalize={result.normalize}" + (f", median of {repeats}" if repeats > 1 else ""))
    for column in ("loader", "CPU workers", "img/s", "ratio"):
        table.add_column(column, justify="left" if column == "loader" else "right")
    table.add_row("DALI (this tool)", f"{result.dali_threads} threads + {result.dali_py_workers} readers",
                  f"{result.dali_img_s:,.0f}", f"{result.ratio:.2f}×")
    table.add_row("torchvision ImageFolder + DataLoader", f"{result.baseline_workers} workers",
                  f"{result.torchvision_img_s:,.0f}", "1.00×")
    console.print(table)
    _write_json(json_out, as_dict(result))


@benchmark_app.command("model")
@user_errors
def benchmark_model_command(
    arch: str = typer.Option("paper", "--arch", help="An arch of the zoo, or 'all'."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per batch."),
    device: str = typer.Option("cpu", "--device", help="cpu or gpu."),
    precision: str = typer.Option("32", "--precision", help="32, bf16-mixed or 16-mixed."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC memory format."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile (inductor)."),
    compare: bool = typer.Option(False, "--compare", help="Also time channels_last, bf16 and compile, as ratios "
                                 "against plain fp32 eager in the same run."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed batches first."),
    batches: int = typer.Option(100, "--batches", help="Timed batches."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Forward and forward+backward+SGD step on synthetic batches: ms/batch mean ± std, img/s, memory.

    Example: [cyan]alexnet benchmark model --arch paper --batch-size 128 --device gpu --precision bf16-mixed[/]
    """
    _require(("--batch-size", batch_size, 1, None), ("--warmup", warmup, 0, None), ("--batches", batches, 1, None))
    from alexnet_cli.bench.speed import as_dict, benchmark_model
    from alexnet_cli.models import ARCHS

    _check_device(device)
    if precision not in ("32", "bf16-mixed", "16-mixed"):
        raise AlexnetError(f"--precision {precision!r}: use 32, bf16-mixed or 16-mixed")
    archs = list(ARCHS) if arch == "all" else [arch]
    variants = [(precision, channels_last, compile)]
    if compare:
        variants = [("32", False, False), ("32", True, False), ("bf16-mixed", False, False), ("32", False, True)]
    results = [benchmark_model(a, batch_size=batch_size, device=device, precision=p, channels_last=cl,
                               compile=c, warmup=warmup, batches=batches, progress=_progress(quiet))
               for a in archs for p, cl, c in variants]
    table = Table(title=f"model speed, batch {batch_size}, {device}")
    for column in ("arch", "variant", "forward ms", "train step ms", "fwd img/s", "train img/s", "vs first",
                   "peak MB"):
        table.add_column(column, justify="left" if column in ("arch", "variant") else "right")
    baselines = {}
    for r in results:
        base = baselines.setdefault(r.arch, r.train_img_s)
        table.add_row(r.arch, r.variant, f"{r.forward_ms:.1f} ± {r.forward_ms_std:.1f}",
                      f"{r.train_ms:.1f} ± {r.train_ms_std:.1f}", f"{r.forward_img_s:,.1f}",
                      f"{r.train_img_s:,.1f}", f"{r.train_img_s / base:.2f}×", f"{r.peak_memory_mb:,.0f}")
    console.print(table)
    _write_json(json_out, {"results": [as_dict(r) for r in results]})


@benchmark_app.command("train")
@user_errors
def benchmark_train_command(
    recipe: str = typer.Option(..., "--recipe", help="A single-process recipe (cpu-demo, single-gpu) or a .yaml."),
    data: Optional[Path] = typer.Option(None, "--data", help="A prepared dataset: real DALI batches."),
    synthetic: bool = typer.Option(False, "--synthetic", help="In-memory batches instead of --data."),
    steps: int = typer.Option(20, "--steps", help="Timed optimizer steps per side."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed steps first."),
    repeats: int = typer.Option(1, "--repeats", help="Run each side this many times, alternating; report "
                                "medians (for noisy shared machines)."),
    vs_synthetic: bool = typer.Option(True, "--vs-synthetic/--no-vs-synthetic", help="With --data, also time "
                                      "Lightning on in-memory batches: is the pipeline the bottleneck?"),
    count_syncs: bool = typer.Option(False, "--count-syncs", help="On a GPU, count the operations that make the "
                                     "host wait for the GPU, per timed step of each side."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (the Lightning side then runs "
                               "without the training progress bar too)."),
) -> None:
    """The recipe's Lightning training step vs a plain PyTorch loop doing the same work: img/s, overhead %,
    data wait.

    Example: [cyan]alexnet benchmark train --recipe cpu-demo --data demo-data --steps 20 --set data.batch_size=32[/]
    """
    _require(("--steps", steps, 1, None), ("--warmup", warmup, 0, None), ("--repeats", repeats, 1, None))
    from dataclasses import asdict

    from alexnet_cli.bench.train_loop import benchmark_train
    from alexnet_cli.recipes import load_recipe

    if synthetic and data is not None:
        raise AlexnetError("give either --data or --synthetic, not both")
    result = benchmark_train(load_recipe(recipe, set_), data, steps=steps, warmup=warmup, synthetic=synthetic,
                             compare_synthetic=vs_synthetic, repeats=repeats, progress_bar=not quiet,
                             count_syncs=count_syncs, progress=_progress(quiet))
    source = "synthetic in-memory batches" if synthetic else f"DALI batches from {data}"
    table = Table(title=f"training loop, {result.recipe}, batch {result.batch_size}, {result.precision}, "
                  f"{result.device}, {steps} steps after {warmup}"
                  + (f", median of {repeats}" if repeats > 1 else "") + f", {source}")
    for column in ("loop", "img/s", "data wait", "vs plain"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    table.add_row("plain PyTorch loop", f"{result.plain_img_s:,.1f}", f"{result.plain_data_wait_frac:.1%}", "1.00×")
    table.add_row("Lightning (alexnet train)", f"{result.lightning_img_s:,.1f}", f"{result.data_wait_frac:.1%}",
                  f"{result.lightning_img_s / result.plain_img_s:.2f}×")
    if result.synthetic_img_s is not None:
        table.add_row("Lightning, synthetic batches", f"{result.synthetic_img_s:,.1f}", "",
                      f"{result.synthetic_img_s / result.plain_img_s:.2f}×")
    console.print(table)
    if result.lightning_syncs_per_step is not None:
        console.print(f"host syncs per step: Lightning {result.lightning_syncs_per_step:.2f}, plain loop "
                      f"{result.plain_syncs_per_step:.2f}")
    spread = result.overhead_pct_runs
    console.print(f"Lightning overhead: {result.overhead_pct:+.1f}% (goal ≤ 5%)"
                  + (f", {min(spread):+.1f}% to {max(spread):+.1f}% over the {len(spread)} pairs"
                     if len(spread) > 1 else "")
                  + (f"; real data at {result.real_vs_synthetic:.1%} of synthetic (goal ≥ 90%)"
                     if result.real_vs_synthetic is not None else ""))
    _write_json(json_out, asdict(result))


@benchmark_app.command("soak")
@user_errors
def benchmark_soak_command(
    data: Path = typer.Option(..., "--data", help="A prepared dataset (the demo data will do)."),
    recipe: str = typer.Option("cpu-demo", "--recipe", help="The recipe to train."),
    epochs: int = typer.Option(30, "--epochs", help="Epochs to train."),
    settle: int = typer.Option(2, "--settle", help="Epochs for pools and caches to fill before growth counts."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<recipe>-<time>)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
) -> None:
    """Train many epochs and print the process's memory (RSS, and GPU memory on GPUs) after each one.

    Example: [cyan]alexnet benchmark soak --data demo-data --epochs 30 --set data.batch_size=16[/]
    """
    _require(("--epochs", epochs, 1, None), ("--settle", settle, 0, None))
    from dataclasses import asdict

    from alexnet_cli.bench.soak import soak

    result = soak(recipe, data, epochs=epochs, settle=settle, out=out, overrides=set_)
    table = Table(title=f"memory per epoch, {recipe}, {result.run_dir}")
    table.add_column("epoch", justify="right")
    table.add_column("RSS MB", justify="right")
    if result.gpu_used_mb:
        table.add_column("GPU used MB", justify="right")
    for epoch, rss in enumerate(result.rss_mb):
        gpu = [f"{result.gpu_used_mb[epoch]:,.0f}"] if result.gpu_used_mb else []
        table.add_row(str(epoch), f"{rss:,.0f}", *gpu)
    console.print(table)
    console.print(f"RSS after epoch {settle - 1} → epoch {len(result.rss_mb) - 1}: {result.rss_growth_mb:+,.1f} MB "
                  f"({result.rss_growth_mb_per_epoch:+,.2f} MB/epoch); {result.images_per_second:,.1f} img/s")
    _write_json(json_out, asdict(result))


@benchmark_app.command("comms")
@user_errors
def benchmark_comms_command(
    batch_size: int = typer.Option(128, "--batch-size", help="Images whose conv layers one device computes per "
                                   "step: each DDP or weird-trick device's own batch, a tower pair's shared one."),
    layout: list[str] = typer.Option([], "--layout", help="ddp, two-gpu, hybrid or weird-trick (repeatable; "
                                     "default: all four)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
) -> None:
    """Bytes per device per training step of every multi-device layout, fp32, the paper's network
    (gloo processes on this machine: 2 per layout, 4 for hybrid).

    Example: [cyan]alexnet benchmark comms --batch-size 128[/]
    """
    _require(("--batch-size", batch_size, 1, None))
    from alexnet_cli.bench.comms import LAYOUT_DEVICES, measure_communication

    unknown = [name for name in layout if name not in LAYOUT_DEVICES]
    if unknown:
        raise AlexnetError(f"--layout {unknown[0]!r}: choose from {', '.join(LAYOUT_DEVICES)}")
    report = measure_communication(batch_size, layout or None)
    table = Table(title=f"communication per device per training step, {batch_size} images per device's conv "
                  "layers, fp32")
    table.add_column("layout / exchange point")
    table.add_column("MB", justify="right")
    for name, points in report.bytes_by_layout.items():
        for point, count in points.items():
            table.add_row(f"{name}: {shown(point)}", f"{count / 1e6:,.2f}")
        table.add_row(f"[bold]{name} total ({LAYOUT_DEVICES[name]} devices)[/]",
                      f"[bold]{report.total(name) / 1e6:,.2f}[/]")
    console.print(table)
    _write_json(json_out, {"batch_size": batch_size, "devices": {n: LAYOUT_DEVICES[n] for n in report.bytes_by_layout},
                           "bytes_by_layout": report.bytes_by_layout,
                           "totals": {n: report.total(n) for n in report.bytes_by_layout}})


if __name__ == "__main__":
    app()
