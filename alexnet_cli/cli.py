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
from alexnet_cli.errors import AlexnetError

app = typer.Typer(
    name="alexnet", no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    help="Train AlexNet the way the 2012 paper did, on today's hardware: prepare ILSVRC2012, train a recipe "
         "(DALI + Lightning), evaluate with the paper's ten crops, and look at the filters.",
)
recipes_app = typer.Typer(help="List the shipped recipes, or show one fully resolved.", no_args_is_help=False)
app.add_typer(recipes_app, name="recipes")
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
        except AlexnetError as exc:
            if debug:
                raise
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if debug:
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            errors.print(f"[bold red]error:[/] {type(exc).__name__}: {message} (rerun with --debug for details)",
                         highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _progress(quiet: bool):
    from alexnet_cli.progress import RichProgress, SilentProgress

    return SilentProgress() if quiet else RichProgress(console)


def _write_json(path: Optional[Path], payload: dict) -> None:
    if path is not None:
        from alexnet_cli.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")
        console.print(f"wrote {path}")


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
    from alexnet_cli.data.prepare import PrepareOptions, prepare_imagenet, summary_dict
    from alexnet_cli.workflow import prepare_demo

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
    table = Table(title=f"prepared {summary.out}" + (" (already complete)" if summary.already_done else ""))
    for column in ("split", "images", "classes"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, count in summary.counts.items():
        table.add_row(split, f"{count:,}", str(summary.classes))
    console.print(table)
    if summary.fixes:
        console.print("converted: " + ", ".join(f"{k} {v}" for k, v in summary.fixes.items()))
    if summary.skipped:
        console.print(f"[yellow]skipped {len(summary.skipped)} unreadable file(s)[/], listed in {summary.out}/report.json")
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
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or model summary."),
) -> None:
    """Train a recipe with Lightning, fed by the DALI pipeline.

    Example: [cyan]alexnet train --recipe cpu-demo --data demo-data --set trainer.max_epochs=2[/]
    """
    from alexnet_cli.train import run

    result = run(recipe, data, out=out, overrides=set_, quiet=quiet)
    table = Table(title=f"run {result.run_dir}", show_header=False)
    if result.best_top1 is not None:
        table.add_row("best val top-1 / top-5", f"{result.best_top1:.2%} / {result.best_top5:.2%} "
                      f"(epoch {result.best_epoch})")
    table.add_row("steps, time", f"{result.global_step}, {result.seconds:.0f} s")
    table.add_row("train throughput", f"{result.images_per_second:,.1f} img/s "
                  f"(data wait {result.data_wait_fraction:.1%})")
    table.add_row("metrics", str(result.run_dir / "metrics.csv"))
    table.add_row("checkpoints", str(result.last_checkpoint or "-") + ("  " + str(result.best_checkpoint)
                                                                         if result.best_checkpoint else ""))
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
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Top-1 / top-5 accuracy with the paper's ten-crop test (§4.1): corners, centre and mirrors.

    Example: [cyan]alexnet eval --checkpoint runs/demo/checkpoints/best.ckpt --data demo-data --ten-crop[/]
    """
    from alexnet_cli.evaluate import PAPER_VAL_ERROR, evaluate

    if device not in ("cpu", "gpu"):
        raise AlexnetError(f"--device {device!r}: use cpu or gpu")
    result = evaluate(data, checkpoint=checkpoint, weights=weights, split=split, ten_crop=ten_crop,
                      batch_size=batch_size, device=device, num_threads=threads, progress=_progress(quiet))
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
    _write_json(json_out, result.to_json())


@app.command("viz-filters")
@user_errors
def viz_filters(
    out: Path = typer.Option(Path("filters.png"), "--out", help="PNG to write."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint from 'alexnet train'."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A torchvision AlexNet state dict instead."),
    layer: str = typer.Option("conv1", "--layer", help="Which conv layer."),
    scale: int = typer.Option(4, "--scale", help="Pixels per kernel pixel."),
) -> None:
    """Draw the learned kernels, like the paper's Figure 3 (one block per GPU tower).

    Example: [cyan]alexnet viz-filters --checkpoint runs/demo/checkpoints/best.ckpt --out filters.png[/]
    """
    from alexnet_cli.checkpoints import load_checkpoint, load_torchvision_weights
    from alexnet_cli.filters import save_filter_grid

    if (checkpoint is None) == (weights is None):
        raise AlexnetError("give exactly one of --checkpoint and --weights")
    model = load_checkpoint(checkpoint).model if checkpoint else load_torchvision_weights(weights, []).model
    save_filter_grid(model, out, layer=layer, scale=scale)
    console.print(f"wrote {out}")


@app.command()
@user_errors
def summary(
    arch: str = typer.Option("paper", "--arch", help="An arch of the zoo."),
    num_classes: int = typer.Option(1000, "--num-classes", help="Width of the last layer."),
) -> None:
    """Layer by layer: output shape, parameters and neurons (the paper counts 60,965,224 parameters).

    Example: [cyan]alexnet summary --arch paper[/]
    """
    from alexnet_cli.models import ARCHS
    from alexnet_cli.summary import summarize

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
    """The whole tool in a few CPU minutes: demo data → train cpu-demo → ten-crop eval → filters.

    Example: [cyan]alexnet demo --out demo[/]
    """
    from alexnet_cli.workflow import run_demo

    result = run_demo(out, overrides=set_, quiet=quiet, progress=_progress(quiet))
    table = Table(title="alexnet demo", show_header=False)
    table.add_row("dataset", f"{result.data} ({result.prepare.counts['train']} train, "
                  f"{result.prepare.counts['val']} val, {result.prepare.classes} classes)")
    table.add_row("official-format source", str(result.source))
    table.add_row("run", f"{result.train.run_dir} ({result.train.images_per_second:.1f} img/s)")
    table.add_row("ten-crop val top-1 / top-5",
                  f"{result.eval.top1:.2%} / {result.eval.top5:.2%} (chance {1 / result.prepare.classes:.1%})")
    table.add_row("eval results", str(result.eval_json))
    table.add_row("filters (Figure 3)", str(result.filters))
    console.print(table)


@recipes_app.callback(invoke_without_command=True)
def recipes_list(ctx: typer.Context) -> None:
    """List the shipped recipes with their descriptions."""
    if ctx.invoked_subcommand is not None:
        return
    from alexnet_cli.recipes import available_recipes, load_recipe

    table = Table(title="recipes")
    table.add_column("name")
    table.add_column("description")
    for name in available_recipes():
        table.add_row(name, load_recipe(name).description)
    console.print(table)


@recipes_app.command("show")
@user_errors
def recipes_show(name: str = typer.Argument(..., help="Recipe name or .yaml path.")) -> None:
    """Print a recipe with every default filled in.

    Example: [cyan]alexnet recipes show single-gpu[/]
    """
    import yaml

    from alexnet_cli.recipes import load_recipe

    console.print(yaml.safe_dump(load_recipe(name).to_dict(), sort_keys=False), highlight=False)


if __name__ == "__main__":
    app()
