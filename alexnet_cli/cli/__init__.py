"""The ``alexnet`` command line: a thin shell, one small function per command, each calling one library
function. The commands live by family (data, training, inspection, bench); this module assembles them."""

import sys

import typer

from alexnet_cli import __version__
from alexnet_cli.cli import bench, data, inspection, training
from alexnet_cli.cli.examples import epilog
from alexnet_cli.cli.shell import HelpFromRegistries, console, debug_tracebacks, errors
from alexnet_cli.terminal import shown

app = typer.Typer(
    name="alexnet", no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    help="Train AlexNet the way the 2012 paper did, on today's hardware: prepare ILSVRC2012, train a recipe "
         "(DALI + Lightning), evaluate with the paper's ten crops, and look at the filters.",
)


def _version(value: bool) -> None:
    if value:
        console.print(f"alexnet-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    debug_tracebacks.set(debug)


for name, command in {"prepare-imagenet": data.prepare_imagenet_command, "pack": data.pack_command,
                      "train": training.train, "eval": inspection.eval_command, "report": inspection.report,
                      "viz-filters": inspection.viz_filters, "predict": inspection.predict,
                      "neighbors": inspection.neighbors, "summary": inspection.summary, "demo": training.demo}.items():
    app.command(name, cls=HelpFromRegistries, epilog=epilog(name))(command)

recipes_app = typer.Typer(help="List the shipped recipes, or show one fully resolved.", no_args_is_help=False)
recipes_app.callback(invoke_without_command=True, epilog=epilog("recipes"))(training.recipes_list)
recipes_app.command("show", cls=HelpFromRegistries, epilog=epilog("recipes show"))(training.recipes_show)
app.add_typer(recipes_app, name="recipes")

benchmark_app = typer.Typer(help="Measure speed: the data pipeline, the model, the training loop and the "
                            "communication, each beside a baseline; count a step's memory traffic.",
                            no_args_is_help=True)
for name, command in {"data": bench.benchmark_data_command, "model": bench.benchmark_model_command,
                      "train": bench.benchmark_train_command, "traffic": bench.benchmark_traffic_command,
                      "soak": bench.benchmark_soak_command, "comms": bench.benchmark_comms_command}.items():
    benchmark_app.command(name, cls=HelpFromRegistries, epilog=epilog(f"benchmark {name}"))(command)
app.add_typer(benchmark_app, name="benchmark")


def main() -> None:
    """The ``alexnet`` entry point: Click's own usage errors (an unknown option, a missing one, a value of the
    wrong type) in the tool's one-line form, as every other error is, instead of a boxed "Error"."""
    try:
        code = app(prog_name="alexnet", standalone_mode=False)
    except typer.Abort:
        errors.print("[bold red]interrupted[/]")
        code = 130
    except Exception as exc:
        # Typer vendors Click, whose exceptions it does not export: a ClickException is known by its class's name
        kinds = {kind.__name__ for kind in type(exc).__mro__}
        if "ClickException" not in kinds:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help, which Typer has printed already
            sys.exit(2)
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "alexnet"
        message = " ".join(exc.format_message().split())
        see = f" (see '{where} --help')" if "UsageError" in kinds else ""
        errors.print(f"[bold red]error:[/] {shown(message)}{see}", highlight=False, soft_wrap=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
