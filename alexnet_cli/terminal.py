"""Text that comes from data, made safe to print on a terminal.

Class names, WNIDs, file names and messages quoting them are data: printed through rich they
would be read as markup (``[/bold]`` fails, ``[link=...]`` plants a hyperlink), and escape
sequences in them would drive the terminal (window title, colours).
"""

import re

from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


def shown(value: object) -> str:
    """``value`` as rich prints it literally: markup escaped, control characters written as \\xNN."""
    return escape(_CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value)))
