"""The benchmark commands: data, model, train, soak, comms; each prints figures beside a baseline."""

from dataclasses import asdict
from pathlib import Path
from typing import get_args

import typer
from rich.table import Table

from alexnet_cli.atomic import check_writable
from alexnet_cli.cli.shell import (
    DeviceName,
    Precision,
    archs_help,
    console,
    help_when_shown,
    listed,
    progress_for,
    require,
    require_choice,
    user_errors,
    write_json,
)
from alexnet_cli.errors import AlexnetError
from alexnet_cli.recipes import CompileBackend, CompileMode, LrnImpl, load_recipe
from alexnet_cli.terminal import shown


@user_errors
def benchmark_data_command(
    data: Path = typer.Option(..., "--data", help="A prepared dataset (real photos give real figures)."),
    recipe: str = typer.Option("cpu-demo", "--recipe", help="Whose data settings to time: device, batch, threads, "
                               "readers, resize, normalisation."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per batch (default: the recipe's)."),
    threads: int | None = typer.Option(None, "--threads", help="DALI threads (default: the recipe's)."),
    py_workers: int | None = typer.Option(None, "--py-workers", help="DALI's file-reading processes (default: "
                                          "the recipe's)."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers of the baseline (default: "
                                       "the DALI threads)."),
    device: DeviceName | None = typer.Option(None, "--device", help="Where the DALI side runs (default: the "
                                             "recipe's)."),
    batches: int = typer.Option(20, "--batches", help="Timed batches, after the warm-up."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed batches first (worker start-up, caches)."),
    repeats: int = typer.Option(1, "--repeats", help="Run each side this many times, alternating; report medians."),
    packed: Path | None = typer.Option(None, "--packed", help="DATA's packed twin ([bold]alexnet pack[/]): time "
                                       "the pipeline on it too, and count each one's opens."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """img/s of a recipe's DALI training pipeline vs torchvision ImageFolder + DataLoader doing the same work."""
    require(("--batch-size", batch_size, 1, None), ("--threads", threads, 1, None),
            ("--py-workers", py_workers, 0, None), ("--workers", workers, 0, None), ("--batches", batches, 1, None),
            ("--warmup", warmup, 0, None), ("--repeats", repeats, 1, None))
    check_writable(json_out, "--json")  # before the measurement, not after it
    from alexnet_cli.bench.data_speed import benchmark_data

    loaded = load_recipe(recipe, _with_data_keys(set_, batch_size=batch_size, num_threads=threads,
                                                 py_workers=py_workers, device=device))
    result = benchmark_data(data, loaded, baseline_workers=workers, batches=batches, warmup=warmup, repeats=repeats,
                            packed=packed, progress=progress_for(quiet))
    console.print(_data_table(result, loaded.name, repeats))
    write_json(json_out, asdict(result))


def _with_data_keys(overrides: list[str], **keys: object) -> list[str]:
    """The ``--set`` overrides, then a ``data.KEY=value`` for each key an option gave."""
    return [*overrides, *(f"data.{key}={value}" for key, value in keys.items() if value is not None)]


def _data_table(result, recipe: str, repeats: int) -> Table:
    table = Table(title=f"training input pipeline ({recipe}), batch {result.batch_size}, {result.device}, "
                  f"normalize={result.normalize}" + (f", median of {repeats}" if repeats > 1 else ""))
    for column in ("loader", "CPU workers", "img/s", "ratio"):
        table.add_column(column, justify="left" if column == "loader" else "right")
    table.add_row("DALI (this tool)", f"{result.dali_threads} threads + {result.dali_py_workers} readers",
                  f"{result.dali_img_s:,.0f}", f"{result.ratio:.2f}×")
    if result.packed_img_s is not None:
        table.add_row("DALI, packed twin", f"{result.dali_threads} threads + {result.dali_py_workers} readers",
                      f"{result.packed_img_s:,.0f}", f"{result.packed_img_s / result.torchvision_img_s:.2f}×")
    table.add_row("torchvision ImageFolder + DataLoader", f"{result.baseline_workers} workers",
                  f"{result.torchvision_img_s:,.0f}", "1.00×")
    if result.opens_per_1000:
        table.caption = "opens per 1,000 images: " + ", ".join(f"{name} {count:,.1f}" for name, count in
                                                               result.opens_per_1000.items())
    return table


@user_errors
@help_when_shown(arch=archs_help(", or 'all'."))
def benchmark_model_command(
    arch: str = typer.Option("paper", "--arch", help="An arch of the zoo, or 'all'."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per batch."),
    device: DeviceName = typer.Option("cpu", "--device", help="Where the model runs."),
    precision: Precision = typer.Option("32", "--precision", help="Lightning's precision name."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC memory format."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (in place, as train does)."),
    compile_mode: str = typer.Option("default", "--compile-mode", help=f"With --compile: "
                                     f"{listed(get_args(CompileMode))} (reduce-overhead: CUDA graphs)."),
    compile_backend: str = typer.Option("inductor", "--compile-backend", help="torch.compile's backend: "
                                        f"{listed(get_args(CompileBackend))} (aot_eager: no code generation)."),
    lrn_impl: str = typer.Option("auto", "--lrn-impl", help=f"{listed(get_args(LrnImpl))} (see models/lrn.py)."),
    split_groups: bool = typer.Option(False, "--split-groups", help="Grouped convolutions as one per group."),
    cudnn_benchmark: bool = typer.Option(True, "--cudnn-benchmark/--no-cudnn-benchmark", help="Let cuDNN time "
                                         "its algorithms first, as the GPU recipes do (trainer.benchmark)."),
    compare: bool = typer.Option(False, "--compare", help="Also time channels_last, bf16 and compile, as ratios "
                                 "against plain fp32 eager in the same run."),
    matrix: bool = typer.Option(False, "--matrix", help="The paper net's variants step by step: bf16 with the "
                                "reference LRN, + closed-form LRN, + channels_last, + split groups, + compile, "
                                "+ CUDA graphs, and without LRN as the lower bound."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed batches first."),
    batches: int = typer.Option(100, "--batches", help="Timed batches."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Forward and forward+backward+SGD step on synthetic batches: ms/batch mean ± std, img/s, memory."""
    require(("--batch-size", batch_size, 1, None), ("--warmup", warmup, 0, None), ("--batches", batches, 1, None))
    check_writable(json_out, "--json")  # before the measurement, not after it
    variants = _model_variants(precision, lrn_impl, channels_last, split_groups, compile_mode, compile=compile,
                               compare=compare, matrix=matrix)
    results = _time_models(arch, variants, batch_size=batch_size, device=device, compile_backend=compile_backend,
                           cudnn_benchmark=cudnn_benchmark, warmup=warmup, batches=batches, quiet=quiet)
    console.print(_model_table(results, batch_size, device))
    write_json(json_out, {"results": [asdict(r) for r in results]})


def _model_variants(precision: Precision, lrn_impl: str, channels_last: bool, split_groups: bool, compile_mode: str,
                    *, compile: bool, compare: bool, matrix: bool) -> list:
    """The ways of running a network to time: the options' one, or --compare's or --matrix's list."""
    require_choice(("--lrn-impl", lrn_impl, LrnImpl), ("--compile-mode", compile_mode, CompileMode))
    from alexnet_cli.bench.speed import COMPARE, PAPER_MATRIX, ModelVariant

    if matrix:
        return PAPER_MATRIX
    return COMPARE if compare else [ModelVariant(precision, lrn_impl, channels_last, split_groups,
                                                 compile_mode if compile else None)]


def _time_models(arch: str, variants: list, *, batch_size: int, device: DeviceName, compile_backend: str,
                 cudnn_benchmark: bool, warmup: int, batches: int, quiet: bool) -> list:
    """Each variant of ``arch`` (every arch of the zoo for 'all') timed."""
    require_choice(("--compile-backend", compile_backend, CompileBackend))
    from alexnet_cli.bench.speed import benchmark_model
    from alexnet_cli.models import ARCHS

    return [benchmark_model(name, batch_size=batch_size, device=device, variant=variant,
                            compile_backend=compile_backend, cudnn_benchmark=cudnn_benchmark, warmup=warmup,
                            batches=batches, progress=progress_for(quiet))
            for name in (list(ARCHS) if arch == "all" else [arch]) for variant in variants]


def _model_table(results: list, batch_size: int, device: DeviceName) -> Table:
    cudnn = "cuDNN autotuned" if results[0].cudnn_benchmark else "cuDNN heuristics" if device == "gpu" else ""
    table = Table(title=f"model speed, batch {batch_size}, {device}" + (f", {cudnn}" if cudnn else ""))
    for column in ("arch", "variant", "forward ms", "train step ms", "fwd img/s", "train img/s", "vs first",
                   "peak MB", "compile s"):
        table.add_column(column, justify="left" if column in ("arch", "variant") else "right")
    baselines = {}
    for r in results:
        base = baselines.setdefault(r.arch, r.train_img_s)
        table.add_row(r.arch, r.variant, f"{r.forward_ms:.1f} ± {r.forward_ms_std:.1f}",
                      f"{r.train_ms:.1f} ± {r.train_ms_std:.1f}", f"{r.forward_img_s:,.1f}",
                      f"{r.train_img_s:,.1f}", f"{r.train_img_s / base:.2f}×", f"{r.peak_memory_mb:,.0f}",
                      "" if r.compile_seconds is None else f"{r.compile_seconds:.0f}")
    return table


@user_errors
def benchmark_traffic_command(
    recipe: str = typer.Option("single-gpu", "--recipe", help="A recipe name or a .yaml: its network, precision, "
                               "batch and speed switches."),
    batch_size: int | None = typer.Option(None, "--batch", help="Images per step (default: the recipe's)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the counts as JSON."),
) -> None:
    """Bytes and FLOPs of one training step, counted op by op as a GPU runs it, and the img/s they allow.

    Counted on meta tensors (no GPU needed): forward, loss, backward, the non-finite check and the fused SGD,
    with autocast and the LRN implementation resolved as on CUDA. The roofline (each op at the card's memory
    bandwidth or tensor-core rate, whichever is slower) bounds the step on an H100 and an H200; beside the
    recipe's default, every LRN implementation it could run (compiled ones as a lower bound).
    """
    require(("--batch", batch_size, 1, None))
    check_writable(json_out, "--json")
    from alexnet_cli.bench.traffic import traffic_report

    report = traffic_report(load_recipe(recipe, set_), batch_size=batch_size)
    console.print(_traffic_table(report))
    if report.implementations:
        console.print(_implementations_table(report))
    write_json(json_out, asdict(report))


def _traffic_table(report) -> Table:
    bound = " (lower bound: compiled)" if report.lower_bound else ""
    table = Table(title=f"one training step of {report.recipe} ({report.arch}, batch {report.batch_size}, "
                  f"{report.precision}{', channels-last' if report.channels_last else ''}; LRN: {report.runs})"
                  f"{bound}", caption="FLOPs: convolutions and matrix products; the roofline counts each op at "
                  "the card's bandwidth or tensor-core rate, whichever is slower")
    for column in ("what", "GB", "share", "GFLOP"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for category, counted in report.by_category.items():
        table.add_row(category, f"{counted['bytes'] / 1e9:,.3f}", f"{counted['bytes'] / report.total_bytes:.1%}",
                      f"{counted['flops'] / 1e9:,.1f}")
    table.add_row("[bold]step[/]", f"[bold]{report.total_bytes / 1e9:,.2f}[/]", "100%",
                  f"[bold]{report.total_flops / 1e9:,.1f}[/]")
    for card, ms in report.roofline_ms.items():
        table.add_row(f"roofline on an {card}", f"{ms:.2f} ms", "", f"≤ {report.roofline_img_s[card]:,.0f} img/s")
    return table


def _implementations_table(report) -> Table:
    cards = list(report.roofline_ms)
    table = Table(title="the same step with each LRN implementation")
    for column in ("LRN", "LRN GB", "step GB", *(f"{card} ms (img/s)" for card in cards), "counted"):
        table.add_column(column, justify="left" if column in ("LRN", "counted") else "right")
    for row in report.implementations:
        table.add_row(row.name + (" [bold](default)[/]" if row.default else ""), f"{row.lrn_bytes / 1e9:,.2f}",
                      f"{row.total_bytes / 1e9:,.2f}",
                      *(f"{row.roofline_ms[card]:.2f} ({row.roofline_img_s[card]:,.0f})" for card in cards),
                      "lower bound" if row.lower_bound else "exact")
    return table


@user_errors
def benchmark_train_command(
    recipe: str = typer.Option(..., "--recipe", help="A single-process recipe (cpu-demo, single-gpu) or a .yaml."),
    data: Path | None = typer.Option(None, "--data", help="A prepared dataset: real DALI batches."),
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
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (the Lightning side then runs "
                               "without the training progress bar too)."),
) -> None:
    """The recipe's Lightning training step vs a plain PyTorch loop doing the same work: img/s, overhead %,
    data wait."""
    require(("--steps", steps, 1, None), ("--warmup", warmup, 0, None), ("--repeats", repeats, 1, None))
    check_writable(json_out, "--json")  # before the measurement, not after it
    if synthetic and data is not None:
        raise AlexnetError("give either --data or --synthetic, not both")
    from alexnet_cli.bench.train_loop import benchmark_train

    result = benchmark_train(load_recipe(recipe, set_), data, steps=steps, warmup=warmup, synthetic=synthetic,
                             compare_synthetic=vs_synthetic, repeats=repeats, progress_bar=not quiet,
                             count_syncs=count_syncs, progress=progress_for(quiet))
    console.print(_train_loop_table(result, steps, warmup, repeats, data))
    console.print("\n".join(_train_loop_notes(result)))
    write_json(json_out, asdict(result))


def _train_loop_table(result, steps: int, warmup: int, repeats: int, data: Path | None) -> Table:
    source = f"DALI batches from {data}" if data is not None else "synthetic in-memory batches"
    table = Table(title=f"training loop, {result.recipe}, batch {result.batch_size}, {result.precision}, "
                  f"{result.device}, {steps} steps after {warmup}" + (f", median of {repeats}" if repeats > 1 else "")
                  + f", {source}")
    for column in ("loop", "img/s", "data wait", "vs plain"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    table.add_row("plain PyTorch loop", f"{result.plain_img_s:,.1f}", f"{result.plain_data_wait_frac:.1%}", "1.00×")
    table.add_row("Lightning (alexnet train)", f"{result.lightning_img_s:,.1f}", f"{result.data_wait_frac:.1%}",
                  f"{result.lightning_img_s / result.plain_img_s:.2f}×")
    if result.synthetic_img_s is not None:
        table.add_row("Lightning, synthetic batches", f"{result.synthetic_img_s:,.1f}", "",
                      f"{result.synthetic_img_s / result.plain_img_s:.2f}×")
    return table


def _train_loop_notes(result) -> list[str]:
    """The lines under the table: GPU busy time, host waits and syncs where measured, and the overhead."""
    notes = []
    if result.gpu_busy_frac is not None:
        notes.append(f"GPU busy {result.gpu_busy_frac:.1%} of the timed steps' span (goal ≥ 95%)")
    if result.host_blocked_ms_per_step is not None:
        notes.append(f"host blocked inside the pipeline's run(): {result.host_blocked_ms_per_step:.2f} ms per step")
    if result.lightning_syncs_per_step is not None:
        notes.append(f"host syncs per step: Lightning {result.lightning_syncs_per_step:.2f}, plain loop "
                     f"{result.plain_syncs_per_step:.2f}")
    spread = result.overhead_pct_runs
    return [*notes, f"Lightning overhead: {result.overhead_pct:+.1f}% (goal ≤ 5%)"
            + (f", {min(spread):+.1f}% to {max(spread):+.1f}% over the {len(spread)} pairs" if len(spread) > 1 else "")
            + (f"; real data at {result.real_vs_synthetic:.1%} of synthetic (goal ≥ 90%)"
               if result.real_vs_synthetic is not None else "")]


@user_errors
def benchmark_soak_command(
    data: Path = typer.Option(..., "--data", help="A prepared dataset (the demo data will do)."),
    recipe: str = typer.Option("cpu-demo", "--recipe", help="The recipe to train."),
    epochs: int = typer.Option(30, "--epochs", help="Epochs to train."),
    settle: int = typer.Option(2, "--settle", help="Epochs for pools and caches to fill before growth counts."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key: section.key=value (repeatable)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<recipe>-<time>)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON."),
) -> None:
    """Train many epochs and print the process's memory (RSS, and GPU memory on GPUs) after each one.
    """
    require(("--epochs", epochs, 1, None), ("--settle", settle, 0, None))
    check_writable(json_out, "--json")  # before the measurement, not after it
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
    write_json(json_out, asdict(result))


def _comms_layouts_help() -> str:
    from alexnet_cli.parallel.layouts import benchmarked_layouts

    return (listed(f"{name} ({devices} processes)" for name, devices in benchmarked_layouts().items())
            + "; repeatable (default: all of them).")


@user_errors
@help_when_shown(layout=_comms_layouts_help)
def benchmark_comms_command(
    batch_size: int = typer.Option(128, "--batch-size", help="Images whose conv layers one device computes per "
                                   "step: each DDP or weird-trick device's own batch, a tower pair's shared one."),
    layout: list[str] = typer.Option([], "--layout", help="A multi-device layout; repeatable (default: all of "
                                     "them)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the figures as JSON."),
) -> None:
    """Bytes per device per training step of every multi-device layout, fp32, the paper's network
    (gloo processes on this machine, one per device of the layout).
    """
    require(("--batch-size", batch_size, 1, None))
    check_writable(json_out, "--json")  # before the measurement, not after it
    from alexnet_cli.bench.comms import measure_communication
    from alexnet_cli.parallel.layouts import benchmarked_layouts

    devices = benchmarked_layouts()
    if unknown := [name for name in layout if name not in devices]:
        raise AlexnetError(f"--layout {unknown[0]!r}: choose from {', '.join(devices)}")
    report = measure_communication(batch_size, layout or None)
    console.print(_comms_table(report, devices))
    write_json(json_out, {"batch_size": batch_size, "devices": {n: devices[n] for n in report.bytes_by_layout},
                          "bytes_by_layout": report.bytes_by_layout,
                          "totals": {n: report.total(n) for n in report.bytes_by_layout}})


def _comms_table(report, devices: dict[str, int]) -> Table:
    table = Table(title=f"communication per device per training step, {report.batch_size} images per device's "
                  "conv layers, fp32")
    table.add_column("layout / exchange point")
    table.add_column("MB", justify="right")
    for name, points in report.bytes_by_layout.items():
        for point, count in points.items():
            table.add_row(f"{name}: {shown(point)}", f"{count / 1e6:,.2f}")
        table.add_row(f"[bold]{name} total ({devices[name]} devices)[/]", f"[bold]{report.total(name) / 1e6:,.2f}[/]")
    return table
