"""The one exception type users see: the CLI prints it as a single line."""


class AlexnetError(Exception):
    """A problem with the user's input or environment, worded so they can fix it.

    Raised anywhere below the CLI; `alexnet_cli.cli` catches it once and prints
    ``error: <message>`` with exit code 2.
    """


class TrainingStopped(AlexnetError):
    """Training ended before its last step, and the user must know why and how to go on.

    ``exit_code``: 1 for bad numbers (a NaN loss), 128 + N when signal N asked the run
    to stop (the shell's convention: 143 for SIGTERM, 130 for Ctrl-C), so that a
    scheduler or a ``&&`` chain never mistakes a stopped run for a finished one.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line: its type and its message's first line (cut at ``limit``), for messages that
    quote another library's error."""
    return f"{type(exc).__name__}: {message_line(exc, limit)}" if str(exc).strip() else type(exc).__name__


def message_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (cut at ``limit``), or its type where it has none: for messages
    whose own words already say what failed."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
