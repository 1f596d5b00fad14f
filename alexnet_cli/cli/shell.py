"""What every command shares: the consoles, the one-line error wrapper, option checks and closed choices.

Errors below the CLI are ``AlexnetError``s; ``user_errors`` catches them, once, and prints one line
(exit code 2). ``--debug`` (set by the root command for this invocation) shows the traceback instead.
"""

import functools
import json
from collections.abc import Callable
from contextvars import ContextVar
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from alexnet_cli.errors import AlexnetError, TrainingStopped
from alexnet_cli.terminal import shown

console = Console()
errors = Console(stderr=True)


class Device(str, Enum):
    """Where a command computes; ``--help`` lists the choices."""

    cpu = "cpu"
    gpu = "gpu"


class Precision(str, Enum):
    """Lightning's precision names that the model benchmark times."""

    fp32 = "32"
    bf16_mixed = "bf16-mixed"
    fp16_mixed = "16-mixed"


# Set by the root command's --debug for this invocation (a context variable: nothing else shares it).
debug_tracebacks: ContextVar[bool] = ContextVar("debug_tracebacks", default=False)


def user_errors(command: Callable) -> Callable:
    """Print ``AlexnetError`` (and anything unexpected) as one line unless --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        debug = debug_tracebacks.get()
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
            from alexnet_cli.parallel.ranks import lost_a_peer

            out_of_memory = _out_of_memory(exc)
            if out_of_memory:
                errors.print(f"[bold red]error:[/] {out_of_memory}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            if lost_a_peer(exc):
                message = f"another training process stopped, so this one cannot go on ({message})"
            errors.print(f"[bold red]error:[/] {shown(type(exc).__name__)}: {shown(message)} "
                         "(rerun with --debug for details)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _out_of_memory(exc: Exception) -> str | None:
    """The line for an allocation the machine refused (torch's CPU allocator, CUDA, Python), else None."""
    import re

    text = str(exc)
    if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    from alexnet_cli.terminal import byte_size

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


def progress_for(quiet: bool):
    from alexnet_cli.progress import RichProgress, SilentProgress

    return SilentProgress() if quiet else RichProgress(console)


def notes_on_stderr():
    """What a long command says before its work starts, on stderr (stdout keeps its results), even with --quiet."""
    from alexnet_cli.progress import RichProgress

    return RichProgress(errors)


def write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        from alexnet_cli.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")
        console.print(f"wrote {shown(path)}")
