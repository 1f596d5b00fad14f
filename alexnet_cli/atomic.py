"""Writes that never leave a half-written file: write a temporary sibling, then rename."""

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from alexnet_cli.errors import AlexnetError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, fsync it, then rename it into place."""
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if not out_of_space(exc):
            raise
        raise AlexnetError(f"could not write {path}: the disk is full or a file size limit was reached; free "
                           f"space there and run again ({path.name} was left as it was)") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: Path | None, option: str | None = None, folder: bool = False) -> None:
    """Refuse, in one line naming ``option``, an output that could not be written: a file that is a folder
    (or a folder that is a file), a path under a file, or a place this process may not create files in.

    Commands call it before their work, so that hours of evaluation or training never end in a failed write.
    Nothing is created: the probe file goes in the nearest folder that already exists, and is removed.
    """
    if path is None:
        return
    named = f"{option} {path}" if option else str(path)
    try:
        _check_writable(path, named, folder)
    except PermissionError as exc:  # a folder on the way that this user may not even look into
        raise AlexnetError(f"{named}: cannot reach {exc.filename} ({exc.strerror}); choose a place you can "
                           "write to") from None


def _check_writable(path: Path, named: str, folder: bool) -> None:
    if not folder and path.is_dir():
        raise AlexnetError(f"{named} is a folder: name a file to write")
    if folder and path.exists() and not path.is_dir():
        raise AlexnetError(f"{named} is a file: name a folder")
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise AlexnetError(f"{blocked} is a file, so {named} cannot be written under it: choose another path")
    existing = next(p for p in (path, *path.parents) if p.is_dir())  # "/" always is
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:  # EACCES, EROFS, EDQUOT...: what the real write would meet
        raise AlexnetError(f"{named}: cannot write in {existing} ({exc.strerror}); choose a place you can "
                           "write to") from None


def out_of_space(exc: BaseException) -> bool:
    """Whether a failed write failed for want of room: a full disk, a quota, a file size limit."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    # torch.save's zip writer reports a failed write as a RuntimeError of its own
    return any(sign in str(exc) for sign in ("file write failed", "inline_container.cc"))


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))

