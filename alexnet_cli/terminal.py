"""Text that comes from data, made safe to print on a terminal.

Class names, WNIDs, file names and messages quoting them are data: printed through rich they
would be read as markup (``[/bold]`` fails, ``[link=...]`` plants a hyperlink), and escape
sequences in them would drive the terminal (window title, colours). Sizes are written in the unit
that fits them (``byte_size``).
"""

import re

from rich.markup import escape

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


def byte_size(count: float) -> str:
    """A size in the unit that fits it (512 B, 3.4 MB, 1.2 TB), decimal as disks are sold: a fixed unit
    printed a small dataset's need as "0.0 GB"."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:,.1f} PB"


def shown(value: object) -> str:
    """``value`` as rich prints it literally: markup escaped, control characters written as \\xNN."""
    return escape(_CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value)))
