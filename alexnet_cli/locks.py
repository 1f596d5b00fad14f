"""One writer per folder: prepare-imagenet's OUT, train's run directory."""

import fcntl
import os
import socket
from pathlib import Path

from alexnet_cli.errors import AlexnetError


class ExclusiveLock:
    """An ``flock`` on ``path``, held until the ``with`` block ends or the process dies.

    The kernel drops it when its holder dies (kill -9 included), so no stale lock outlives a crash. The
    holder writes its pid and host into the file, and a refused second writer names them. ``busy`` is the
    start of that refusal, e.g. ``"another alexnet train is using run R"``.
    """

    def __init__(self, path: Path, busy: str) -> None:
        self.path, self.busy = Path(path), busy
        self.fd: int | None = None

    def __enter__(self) -> "ExclusiveLock":
        try:
            # O_NOFOLLOW: a link planted in the folder is refused, not followed; no O_TRUNC: the holder's
            # pid must stay readable for the one refused
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise AlexnetError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").split()
            os.close(fd)
            named = f"pid {holder[0]} on {holder[1]}" if len(holder) == 2 else "a process that is starting"
            raise AlexnetError(f"{self.busy} ({named}): wait for it to end") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            # unlocked explicitly: a process forked meanwhile (a DALI or pool worker) shares the descriptor
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
