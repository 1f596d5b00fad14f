"""Commands that make datasets: prepare-imagenet, pack."""

from pathlib import Path

import typer
from rich.table import Table

from alexnet_cli.atomic import check_writable
from alexnet_cli.cli.shell import console, progress_for, require, user_errors, write_json
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import Progress
from alexnet_cli.terminal import byte_size, shown


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
    pack: bool = typer.Option(False, "--pack", help="Store the images in tar shards read by offset (see "
                              "[bold]alexnet pack[/]): for Lustre, NFS or GPFS, where 1.28 M opens an epoch are slow."),
    shard_size: str = typer.Option("1G", "--shard-size", help="With --pack: bytes per shard (K, M, G suffixes)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON."),
) -> None:
    """Turn the official ILSVRC2012 files into the dataset [bold]train[/] reads, with the paper's statistics.

    Resumable: rerun the same command after a crash and it continues where it stopped.
    """
    require(("--workers", workers, 1, None), ("--classes", classes, 2, None), ("--per-class", per_class, 1, None))
    check_writable(out, "--out", folder=True)
    check_writable(json_out, "--json")
    shard_bytes = parse_bytes(shard_size, "--shard-size")
    from alexnet_cli.data.prepare.pack import prepare_packed
    from alexnet_cli.data.prepare.run import summary_dict

    progress = progress_for(quiet)
    options = dict(demo=demo, workers=workers, progress=progress, size=size, mode=mode, classes=classes,
                   per_class=per_class, verify_md5=verify_md5, strict=strict)
    if not pack:
        summary = _prepare(source, out, **options)
        _print_summary(summary)
        write_json(json_out, summary_dict(summary))
        return
    packed = prepare_packed(out, lambda staging: _print_summary(_prepare(source, staging, **options)), shard_bytes,
                            progress, stored_as={"size": size, "mode": mode})
    _print_pack_summary(packed)
    write_json(json_out, summary_dict(packed))


@user_errors
def pack_command(
    data: Path = typer.Argument(..., help="A dataset prepared by [bold]alexnet prepare-imagenet[/]."),
    out: Path = typer.Option(..., "--out", help="Folder for the packed dataset (new or empty)."),
    shard_size: str = typer.Option("1G", "--shard-size", help="Bytes per shard (K, M, G suffixes): fewer, larger "
                                   "shards mean fewer opens; each worker holds one open per shard it reads."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON."),
) -> None:
    """Pack a prepared dataset into tar shards (webdataset layout) plus a binary index: the same JPEG bytes, read
    by offset, a few opens an epoch instead of one per image.

    [bold]train[/], [bold]eval[/], [bold]neighbors[/] and [bold]benchmark data[/] read the packed folder as they
    read the original, in the same order: a run resumes on either. DALI's readers.webdataset reads the shards
    too (a .idx per shard). Resumable: rerun the same command after a crash and it continues where it stopped.
    """
    check_writable(out, "--out", folder=True)
    check_writable(json_out, "--json")
    from alexnet_cli.data.prepare.pack import PackOptions, pack_dataset
    from alexnet_cli.data.prepare.run import summary_dict

    summary = pack_dataset(PackOptions(data, out, parse_bytes(shard_size, "--shard-size")), progress_for(quiet))
    _print_pack_summary(summary)
    write_json(json_out, summary_dict(summary))


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str, option: str) -> int:
    """``1G``, ``256M``, ``65536``: a size in bytes (binary units; a trailing B or iB is allowed)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in _UNITS else (cleaned, "")
    try:
        value = float(number) * _UNITS[unit]
        int(value)  # infinite: refused like any other word
    except (ValueError, OverflowError):
        raise AlexnetError(f"{option} {text!r} is not a size: give bytes, or a number with K, M or G (e.g. 1G)") \
            from None
    if not value >= 1:
        raise AlexnetError(f"{option} {text!r} must be a positive size (e.g. 1G)")
    return int(value)


def _print_pack_summary(summary) -> None:
    table = Table(title=f"packed {shown(summary.out)}" + (" (already complete)" if summary.already_done else ""))
    for column in ("split", "samples", "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, count in summary.counts.items():
        table.add_row(split, f"{count:,}", str(summary.shards[split]))
    console.print(table)
    console.print(f"{byte_size(summary.bytes)} in shards; fingerprint {summary.fingerprint}")
    if not summary.already_done and summary.seconds:
        console.print(f"{summary.samples_per_second:,.0f} samples/s, {summary.seconds:.1f} s")


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
