"""The one exception type users see: the CLI prints it as a single line."""


class AlexnetError(Exception):
    """A problem with the user's input or environment, worded so they can fix it.

    Raised anywhere below the CLI; `alexnet_cli.cli` catches it once and prints
    ``error: <message>`` with exit code 2.
    """
