"""Commands that look at trained models: eval, report, viz-filters, predict, neighbors, summary."""

import csv
import io
from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from alexnet_cli.atomic import check_writable, write_text_atomic
from alexnet_cli.cli.shell import (
    DeviceName,
    archs_help,
    console,
    errors,
    help_when_shown,
    progress_for,
    require,
    user_errors,
    write_json,
)
from alexnet_cli.errors import AlexnetError
from alexnet_cli.terminal import shown


@user_errors
def eval_command(
    data: Path = typer.Option(..., "--data", help="A prepared dataset."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A checkpoint from 'alexnet train'."),
    weights: Path | None = typer.Option(None, "--weights", help="A torchvision AlexNet state dict instead."),
    split: str = typer.Option("val", "--split", help="Which split to evaluate."),
    ten_crop: bool = typer.Option(True, "--ten-crop/--center-crop", help="The paper's 10 crops, or one centre crop."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per batch (×10 crops)."),
    device: DeviceName = typer.Option("cpu", "--device", help="Where the network runs."),
    threads: int = typer.Option(2, "--threads", help="DALI threads."),
    devices: int = typer.Option(1, "--devices", help="Processes (one per GPU); each image is counted once."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON."),
    predictions: Path | None = typer.Option(None, "--predictions", help="Write each image's label and top-5 "
                                            "classes as CSV (file,label,top1,top5)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Top-1 / top-5 accuracy with the paper's ten-crop test (§4.1): corners, centre and mirrors."""
    require(("--batch-size", batch_size, 1, None), ("--threads", threads, 1, None), ("--devices", devices, 1, None))
    check_writable(json_out, "--json")  # before the evaluation, not after it
    check_writable(predictions, "--predictions")
    from alexnet_cli.inspection.evaluate import evaluate

    result = evaluate(data, checkpoint=checkpoint, weights=weights, split=split, ten_crop=ten_crop,
                      batch_size=batch_size, device=device, num_threads=threads, devices=devices,
                      with_predictions=predictions is not None, progress=progress_for(quiet))
    console.print(_accuracy_table(result, f"{data} / {split}", ten_crop))
    console.print(f"{result.images_per_second:,.1f} img/s")
    _warn_skipped(result, json_out)
    if predictions is not None:
        _write_predictions(predictions, result.predictions)
        result.predictions = None  # in the CSV, not also in the JSON
    write_json(json_out, result.to_json())


def _accuracy_table(result, evaluated: str, ten_crop: bool) -> Table:
    """This model's accuracy and error, under the paper's for its own network."""
    from alexnet_cli.inspection.evaluate import PAPER_VAL_ERROR

    table = Table(title=f"{result.arch} on {evaluated}: {result.images:,} images, "
                  f"{'10 crops' if ten_crop else 'centre crop'}")
    for column in ("", "top-1 acc", "top-5 acc", "top-1 err", "top-5 err"):
        table.add_column(column, justify="right")
    table.add_row("this model", f"{result.top1:.2%}", f"{result.top5:.2%}", f"{result.top1_error:.2%}",
                  f"{result.top5_error:.2%}")
    if result.arch == "paper":
        table.add_row("paper, 1 CNN (ILSVRC-2012 val)", f"{1 - PAPER_VAL_ERROR['top1']:.1%}",
                      f"{1 - PAPER_VAL_ERROR['top5']:.1%}", f"{PAPER_VAL_ERROR['top1']:.1%}",
                      f"{PAPER_VAL_ERROR['top5']:.1%}")
    return table


def _warn_skipped(result, json_out: Path | None) -> None:
    """One line on stderr for the images that could not be scored, where there were any."""
    if not result.skipped:
        return
    errors.print(f"[yellow]skipped {len(result.skipped)} image(s) that could not be used[/] (not scored; "
                 f"accuracy is over the {result.images:,} read), e.g. {shown(result.skipped[0])}"
                 + (f"; all listed in {shown(json_out)}" if json_out else "; --json lists them all"),
                 highlight=False, soft_wrap=True)


def _write_predictions(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "label", "top1", "top5"])
    for row in rows:
        writer.writerow([row["file"], row["label"], row["top5"][0], " ".join(map(str, row["top5"]))])
    write_text_atomic(path, text.getvalue())


@user_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories of 'alexnet train' (finished or not)."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.md and curves.png."),
) -> None:
    """Runs beside each other and beside the paper's errors: report.md and curves.png.
    """
    check_writable(out, "--out", folder=True)
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


@user_errors
def viz_filters(
    out: Path = typer.Option(Path("filters.png"), "--out", help="PNG to write."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A checkpoint from 'alexnet train'."),
    weights: Path | None = typer.Option(None, "--weights", help="A torchvision AlexNet state dict instead."),
    layer: str = typer.Option("conv1", "--layer", help="Which conv layer."),
    scale: int = typer.Option(4, "--scale", help="Pixels per kernel pixel."),
    since_init: bool = typer.Option(False, "--since-init", help="Draw what training changed (the kernels minus "
                                    "their initial values, rebuilt from the recipe's seed): a short run's "
                                    "kernels are still mostly their random start."),
) -> None:
    """Draw the learned kernels, like the paper's Figure 3 (one block per GPU tower).
    """
    require(("--scale", scale, 1, 64))
    check_writable(out, "--out")
    from alexnet_cli.inspection.filters import relative_change, save_filter_grid
    from alexnet_cli.models.checkpoints import initial_model, load_checkpoint, load_torchvision_weights

    if (checkpoint is None) == (weights is None):
        raise AlexnetError("give exactly one of --checkpoint and --weights")
    if since_init and checkpoint is None:
        raise AlexnetError("--since-init needs --checkpoint: torchvision's weights do not say how they started")
    loaded = load_checkpoint(checkpoint) if checkpoint else load_torchvision_weights(weights, [])
    start = initial_model(loaded) if checkpoint else None
    save_filter_grid(loaded.model, out, layer=layer, scale=scale, start=start if since_init else None)
    console.print(f"wrote {shown(out)}" + (f" ({layer} moved {relative_change(loaded.model, start, layer):.1%} "
                                          "from its initial values)" if start is not None else ""))


@user_errors
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (any format PIL reads)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint from 'alexnet train'."),
    top: int = typer.Option(5, "--top", help="How many classes to list."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the predictions as JSON."),
) -> None:
    """The most probable classes of each image, with names and probabilities.
    """
    require(("--top", top, 1, None))
    check_writable(json_out, "--json")
    from alexnet_cli.inspection.predict import predict as predict_images

    predictions, unusable = predict_images(checkpoint, images, top=top)
    for prediction in predictions:
        table = Table(title=shown(prediction.image))
        for column in ("#", "wnid", "class", "probability"):
            table.add_column(column, justify="right" if column in ("#", "probability") else "left")
        for rank, item in enumerate(prediction.classes, start=1):
            table.add_row(str(rank), shown(item["wnid"]), shown(item["words"]), f"{item['probability']:.1%}")
        console.print(table)
    for bad in unusable:
        errors.print(f"[yellow]skipped[/] {shown(bad.reason)}", highlight=False, soft_wrap=True)
    write_json(json_out, {"predictions": [asdict(p) for p in predictions], "unusable": [asdict(u) for u in unusable]})


@user_errors
def neighbors(
    query: list[Path] = typer.Option(..., "--query", help="Query image file(s); repeat for several."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A checkpoint from 'alexnet train'."),
    data: Path = typer.Option(..., "--data", help="The prepared dataset whose training images are searched."),
    k: int = typer.Option(6, "--k", help="Neighbours per query."),
    out: Path = typer.Option(Path("neighbors.png"), "--out", help="PNG grid: a row per query, query first."),
    device: DeviceName = typer.Option("cpu", "--device", help="Where the training set is embedded and "
                                  "searched."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Figure 4: the training images nearest to each query by fc7 activations (Euclidean).

    The training set's codes are stored beside the checkpoint (float16, CHECKPOINT.train-fc7.f16; in
    ~/.cache/alexnet-cli/neighbors where its folder is read-only), so the next query is fast; an interrupted
    embedding continues where it stopped when run again. Images that cannot be read are never neighbours.
    """
    require(("--k", k, 1, None))
    check_writable(out, "--out")
    from alexnet_cli.inspection.neighbors import find_neighbours

    results = find_neighbours(checkpoint, data, query, k=k, out=out, device=device, progress=progress_for(quiet))
    for result in results:
        table = Table(title=f"nearest to {result.query}")
        table.add_column("#", justify="right")
        table.add_column("training image")
        table.add_column("distance", justify="right")
        for rank, (path, distance) in enumerate(result.neighbours, start=1):
            table.add_row(str(rank), path, f"{distance:,.2f}")
        console.print(table)
    console.print(f"wrote {shown(out)}")


@user_errors
@help_when_shown(arch=archs_help())
def summary(
    arch: str = typer.Option("paper", "--arch", help="An arch of the zoo."),
    num_classes: int = typer.Option(1000, "--num-classes", help="Width of the last layer."),
) -> None:
    """Layer by layer: output shape, parameters and neurons (the paper counts 60,965,224 parameters).
    """
    require(("--num-classes", num_classes, 1, None))
    from alexnet_cli.inspection.summary import summarize
    from alexnet_cli.models import ARCHS

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
