"""What every command shares: the consoles, the one-line error wrapper, option checks and closed choices.

Errors below the CLI are ``AlexnetError``s; ``user_errors`` catches them, once, and prints one line
(exit code 2). ``--debug`` (set by the root command for this invocation) shows the traceback instead.

Imports: the command modules import the bottom layer (errors, recipes, atomic, progress, terminal) at the top,
and every package between it and the CLI (workflows, bench, inspection, training, parallel, models, data) inside
the command that needs it: they import torch, Lightning or PIL, which ``alexnet --help`` and ``alexnet recipes``
never need. Measured on 2 cores: ``alexnet --help`` takes 0.3 s; importing ``alexnet_cli.parallel.layouts`` would
add 6 s to it, ``alexnet_cli.models`` 2.5 s, ``alexnet_cli.data.prepare.run`` 0.4 s.
"""

import functools
import json
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import typer
from rich.console import Console
from typer.core import TyperCommand

from alexnet_cli.atomic import write_text_atomic
from alexnet_cli.errors import AlexnetError, TrainingStopped, message_line
from alexnet_cli.progress import Progress, RichProgress, SilentProgress
from alexnet_cli.recipes import DataConfig
from alexnet_cli.terminal import byte_size, shown

console = Console()
errors = Console(stderr=True)

# Where a command computes: the tool's two device names, as recipes read them (data.device; devices.py names them
# too, but imports torch).
DeviceName = get_type_hints(DataConfig)["device"]
# Lightning's precision names that the model benchmark times: bench/speed.py's ``Precision``, which imports torch
# (tests/cli/test_choices.py holds the two equal).
Precision = Literal["32", "bf16-mixed", "16-mixed"]

# Set by the root command's --debug for this invocation (a context variable: nothing else shares it).
debug_tracebacks: ContextVar[bool] = ContextVar("debug_tracebacks", default=False)


def user_errors(command: Callable) -> Callable:
    """Print ``AlexnetError`` (and anything unexpected) as one line unless --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            errors.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if debug_tracebacks.get():
                raise
            raise typer.Exit(_print_error(exc)) from None

    return wrapper


def _print_error(exc: Exception) -> int:
    """Print ``exc`` as one line on stderr; the exit code it gives."""
    if isinstance(exc, TrainingStopped):
        from alexnet_cli.training.preemption import trainer_is_rank_zero

        if trainer_is_rank_zero():  # every DDP rank stops alike; one line is enough
            errors.print(f"[bold yellow]stopped:[/] {shown(exc)}", highlight=False, soft_wrap=True)
        return exc.exit_code
    if isinstance(exc, AlexnetError):
        return _print_error_line(shown(exc), 2)
    if (out_of_memory := _out_of_memory(exc)) is not None:
        return _print_error_line(out_of_memory, 2)
    from alexnet_cli.parallel.peer_errors import lost_a_peer, peer_timed_out

    message = message_line(exc, limit=300) if str(exc).strip() else ""
    if lost_a_peer(exc):
        message = f"another training process stopped, so this one cannot go on ({message})"
    elif peer_timed_out(exc):
        return _print_error_line(f"another training process stopped answering (trainer.collective_timeout_s passed "
                                 f"in a collective: {shown(message)}); the newest checkpoint is intact: resume with "
                                 "--resume RUN_DIR once every node is back", 1)
    return _print_error_line(f"{shown(type(exc).__name__)}: {shown(message)} (rerun with --debug for details)", 1)


def _print_error_line(message: str, exit_code: int) -> int:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return exit_code


def _out_of_memory(exc: Exception) -> str | None:
    """The line for an allocation the machine refused (torch's CPU allocator, CUDA, Python), else None."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    asked = re.search(r"tried to allocate (\d+) bytes", text)  # the CPU allocator's words; CUDA's name a size
    size = byte_size(int(asked.group(1))) if asked else next(iter(re.findall(r"[Tt]ried to allocate ([\d.]+ [KMGT]iB)",
                                                                            text)), None)
    return (f"out of memory{f' (tried to allocate {size})' if size else ''}: the batch does not fit; use a smaller "
            "batch size")


def require(*bounds: tuple[str, int | None, int | None, int | None]) -> None:
    """Each (option, value, lowest, highest): a value outside its range is refused in one line."""
    for option, value, low, high in bounds:
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise AlexnetError(f"{option} {value}: must be {allowed}")


def require_choice(*choices: tuple[str, str, Any]) -> None:
    """Each (option, value, a ``Literal`` type): a value the type does not name is refused in one line."""
    for option, value, names in choices:
        if value not in get_args(names):
            raise AlexnetError(f"{option} {value!r}: choose one of {', '.join(get_args(names))}")


def listed(names: Iterable[str]) -> str:
    """Names as help text says them: "a, b or c"."""
    *most, last = names
    return f"{', '.join(most)} or {last}" if most else last


def help_when_shown(**helps: Callable[[], str]) -> Callable[[Callable], Callable]:
    """Options whose help names what a registry holds that is too costly to import at every start (the layouts
    import torch and Lightning): each option's help is ``helps[name]()``, read when its command's ``--help`` shows
    it (by ``HelpFromRegistries``); until then the help the option declares. That --help then pays the import
    (``benchmark comms --help``: 6 s, not 0.3 s)."""

    def mark(command: Callable) -> Callable:
        command.help_when_shown = helps
        return command

    return mark


def archs_help(ending: str = ".") -> Callable[[], str]:
    """``--arch``'s help when shown: the zoo's names (``models/build.ARCHS``, which imports torch)."""

    def words() -> str:
        from alexnet_cli.models import ARCHS

        return f"An arch of the zoo: {listed(ARCHS)}{ending}"

    return words


class HelpFromRegistries(TyperCommand):
    """Every command's class: it fills in the option help that ``help_when_shown`` marks, when help is asked."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        helps = getattr(self.callback, "help_when_shown", {})
        for param in self.params:
            if param.name in helps:
                param.help = helps[param.name]()
        super().format_help(ctx, formatter)


def progress_for(quiet: bool) -> Progress:
    return SilentProgress() if quiet else RichProgress(console)


def notes_on_stderr() -> Progress:
    """What a long command says before its work starts, on stderr (stdout keeps its results), even with --quiet."""
    return RichProgress(errors)


def write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")
        console.print(f"wrote {shown(path)}")
