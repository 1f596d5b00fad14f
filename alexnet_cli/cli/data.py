"""Commands that make datasets: prepare-imagenet."""

from pathlib import Path

import typer
from rich.table import Table

from alexnet_cli.atomic import check_writable
from alexnet_cli.cli.shell import console, progress_for, require, user_errors, write_json
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress
from alexnet_cli.terminal import shown


@user_errors
def prepare_imagenet_command(
    out: Path = typer.Option(..., "--out", help="Folder for the prepared dataset."),
    source: Path | None = typer.Option(None, "--source", help="Folder with the ILSVRC2012 tars (or train/ val/)."),
    demo: bool = typer.Option(False, "--demo", help="Make the synthetic demo dataset instead (no download)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (default: all cores)."),
    size: int = typer.Option(256, "--size", help="Shorter side of the stored images (the paper: 256)."),
    mode: str = typer.Option("paper", "--mode", help="paper: 256×256 centre crop (§2); shorter: keep aspect."),
    classes: int | None = typer.Option(None, "--classes", help="Keep a deterministic subset of K classes."),
    per_class: int | None = typer.Option(None, "--per-class", help="Keep at most M train images per class."),
    verify_md5: bool = typer.Option(False, "--verify-md5", help="Check the official files' MD5 first."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable image instead of skipping."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON."),
) -> None:
    """Turn the official ILSVRC2012 files into the dataset [bold]train[/] reads, with the paper's statistics.

    Resumable: rerun the same command after a crash and it continues where it stopped.
    """
    require(("--workers", workers, 1, None), ("--classes", classes, 2, None), ("--per-class", per_class, 1, None))
    check_writable(out, "--out", folder=True)
    check_writable(json_out, "--json")
    from alexnet_cli.data.prepare.run import summary_dict

    summary = _prepare(source, out, demo=demo, workers=workers, progress=progress_for(quiet), size=size, mode=mode,
                       classes=classes, per_class=per_class, verify_md5=verify_md5, strict=strict)
    _print_summary(summary)
    write_json(json_out, summary_dict(summary))


def _prepare(source: Path | None, out: Path, *, demo: bool, workers: int | None, progress: Progress, **options):
    """The synthetic demo dataset, or the official files' (or an ImageFolder's), prepared in ``out``."""
    if demo:
        if source is not None:
            raise AlexnetError("--demo makes its own source; drop --source")
        from alexnet_cli.data.prepare.demo import prepare_demo

        return prepare_demo(out, workers=workers, progress=progress)
    if source is None:
        raise AlexnetError("--source is required (or --demo for the synthetic dataset)")
    from alexnet_cli.data.prepare.run import PrepareOptions, prepare_imagenet

    return prepare_imagenet(PrepareOptions(source, out, workers, **options), progress)


def _print_summary(summary) -> None:
    """The images and classes of each split, then what was converted, skipped, and how fast."""
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
